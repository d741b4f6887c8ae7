"""Writes power_minutes.txt.xz (run from examples/): five days of a household's electricity use,
one reading a minute, in the layout of UCI's "Individual household electric power consumption"
file (household_power_consumption.txt): `;`-separated, day-first `Date` and a separate `Time`,
and `?` for the minutes the meter missed; xz-compressed (dlref reads it so) to keep examples/
small. Generated, not measured: a daily cycle (low at night, peaks at breakfast and dinner),
appliances switching on and off, and noise."""

import datetime
import lzma
import math
import random

random.seed(0)
start = datetime.datetime(2006, 12, 16, 17, 24)  # The real file's first reading.
appliance, lines = 0.0, ["Date;Time;Global_active_power"]
for minute in range(5 * 24 * 60):
    when = start + datetime.timedelta(minutes=minute)
    hour = when.hour + when.minute / 60
    if random.random() < 0.01:  # An appliance switches on or off.
        appliance = random.choice([0.0, 0.0, 1.2, 2.0])
    if 3000 <= minute < 3045 or random.random() < 0.002:
        lines.append(f"{when.day}/{when.month}/{when.year};{when:%H:%M:%S};?")
        continue
    use = (0.35 + 1.1 * math.exp(-((hour - 8) ** 2) / 2) + 1.8 * math.exp(-((hour - 19.5) ** 2) / 4)
           + appliance + random.gauss(0, 0.12))
    lines.append(f"{when.day}/{when.month}/{when.year};{when:%H:%M:%S};{max(use, 0.08):.3f}")
with lzma.open("power_minutes.txt.xz", "wt", newline="\n") as out:
    out.write("\n".join(lines) + "\n")
