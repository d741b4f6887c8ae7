"""One numeric series over time (chapter 9): read, checked, split by time, and windowed.

A series comes from a table (`--data FILE --target COLUMN [--date-column COLUMN]`) or from the
built-in default, the Mauna Loa CO2 record that ships with statsmodels (monthly means of the
weekly measurements, 1958-2001, 526 months). Dates are parsed and sorted; unparseable dates,
duplicate timestamps and text in the value column are refused with the rows named; missing
timestamps of a regular series and missing values are filled by linear interpolation, with a
notice. Splits are by time, never shuffled across a boundary: train, then validation, then
test. The book's pipeline follows: difference the series, scale the changes to [-1, 1] with the
training period's range only, and cut lagged windows whose target is the next change. A stateful
network trains on whole batches only: `trim_to_batches` drops the oldest windows that fill none.
"""

import dataclasses
import hashlib
import json
import warnings

import numpy as np
import pandas as pd

from dlref.data import Dataset
from dlref.data.tables import MISSING_WORDS, file_lines, named_above, read_table, sheet_read
from dlref.errors import DlrefError
from dlref.text import listing, plural, shown_path

BUILTIN = "co2"
# Season length by the pandas frequency's leading letters (seasonal naive, classical model).
SEASONS = {"A": 1, "Y": 1, "Q": 4, "BQ": 4, "M": 12, "MS": 12, "BM": 12, "BMS": 12, "W": 52,
           "D": 7, "B": 5, "h": 24, "H": 24}


@dataclasses.dataclass
class Series:
    """Values in time order, their dates (None: row order only), and what reading found."""

    values: np.ndarray
    dates: pd.DatetimeIndex | None
    name: str
    where: str
    frequency: str | None = None
    notes: list = dataclasses.field(default_factory=list)
    added_timestamps: int = 0  # Missing timestamps of a regular series, now gaps.
    dayfirst: bool = False  # Text dates like 03/04/2024 were read day first (a run keeps it
    # for its new files; month first is not kept: a new file decides for itself).


# --- Reading -------------------------------------------------------------------------------------


def read(source, dayfirst=None):
    """The series of `source` (--data/--target/--date-column), or the built-in CO2 record.
    dayfirst: how to read dates like 03/04/2024 (a run's reading, for its new files); None
    decides from the file."""
    if source.dataset:
        raise DlrefError(f"No named dataset {source.dataset!r} for time series; give --data "
                         "FILE --target COLUMN, or nothing for the built-in CO2 series.")
    source.refuse_options("timeseries", "text_column", "embeddings")
    tabular = {"--val-data": source.val_data, "--test-data": source.test_data,
               "--missing": source.missing, "--drop": source.drop, "--features": source.features,
               "--positive-class": source.positive_class,
               "--max-categories": source.max_categories}
    given = [flag for flag, value in tabular.items() if value]
    if given:
        raise DlrefError(f"{', '.join(given)} go with tables, not with a time series: it is "
                         "split by time (--set test_fraction=F) and gaps are interpolated.")
    if not source.data:
        return _fill_values(_builtin())
    if not source.target:
        raise DlrefError("Name the column to forecast: --target COLUMN (and --date-column "
                         "COLUMN for its dates).")
    frame, notes = read_table(source.data)
    where = shown_path(source.data)
    if source.date_column == source.target:
        raise DlrefError(f"--target and --date-column both name {source.target!r}: the target "
                         "is the column of numbers to forecast, the date column says when.")
    for column in [source.target] + ([source.date_column] if source.date_column else []):
        if column not in frame.columns:
            raise DlrefError(f"{where} has no column {column!r}.{named_above(frame, column)}"
                             f"{sheet_read(frame)} Columns: {listing(frame.columns, 20)}.")
    by = f" by {source.date_column!r}" if source.date_column else ""
    notes = [f"Data: {where}, target {source.target!r}{by}: forecast"] + list(notes)
    values = _numbers(frame[source.target], where)
    dates, dayfirst = (_dates(frame[source.date_column], where, notes, dayfirst)
                       if source.date_column else (None, False))
    series = Series(values, dates, source.target, where, notes=notes, dayfirst=dayfirst)
    if dates is None:
        series.notes.append("No --date-column: the rows are taken in file order, one step each.")
        return _fill_values(series)
    others = frame.drop(columns=[source.target, source.date_column])
    series.dates, clock = _with_times_of_day(dates, others, source.date_column, notes)
    others = others.drop(columns=[clock] if clock else [])
    return _fill_values(_regular(_sorted(series, others)))


def _builtin():
    import statsmodels.api as sm

    weekly = sm.datasets.co2.load_pandas().data["co2"]
    monthly = weekly.resample("MS").mean()
    return Series(monthly.to_numpy(dtype="float64"), monthly.index, "co2", "co2 (built-in)",
                  frequency="MS", notes=["Data: co2 (built-in): Mauna Loa CO2 in ppm, monthly "
                                         "means of weekly measurements, 1958-2001."])


def _numbers(column, where):
    """The column as numbers; words for "no value" (n/a, missing, #DIV/0!) are gaps."""
    values = pd.to_numeric(column, errors="coerce")
    words = column.astype(str).str.strip().str.lower().isin(MISSING_WORDS)
    bad = values.isna() & column.notna() & ~words
    if bad.any():
        rows = np.flatnonzero(bad.to_numpy())
        raise DlrefError(
            f"{where}: column {column.name!r} holds text where numbers belong in "
            f"{plural(len(rows), 'row')} (file lines {file_lines(rows, column)}; e.g. "
            f"{column.iloc[rows[0]]!r}). A series needs a number (or nothing) on every row.")
    return values.to_numpy(dtype="float64")


def _dates(column, where, notes, dayfirst=None):
    """(a DatetimeIndex, whether text dates were read day first) from a date column: text in
    any common format (day first when `dayfirst` or, when None, the file says so), year
    numbers, YYYYMMDD numbers, Unix times and Excel day numbers. Time zones
    are dropped, keeping local wall time (a monthly series stays on the 1st of each month),
    except in a series of hours or minutes whose UTC offset changes (daylight-saving time):
    there wall time repeats an hour each autumn and skips one each spring, so the instants are
    read as UTC (with a note)."""
    utc, read_dayfirst = None, False
    if pd.api.types.is_datetime64_any_dtype(column):
        parsed = column
        if getattr(parsed.dt, "tz", None) is not None:
            parsed, utc = parsed.dt.tz_localize(None), parsed.dt.tz_convert(None)
    else:
        numbers = pd.to_numeric(column, errors="coerce")
        parsed = (_number_dates(numbers, column, where, notes) if numbers.notna().all()
                  else None)
        if parsed is None:
            parsed, utc, read_dayfirst = _text_dates(column, where, notes, dayfirst)
    if utc is not None and _offset_changes_within_days(parsed, utc):
        offsets = sorted(_offset(o) for o in (parsed - utc).unique())
        notes.append(f"Dates: {column.name!r} has UTC offsets that change ({listing(offsets, 4)}"
                     "; daylight-saving time), so its times are read as UTC: local clock times "
                     "repeat an hour when the clocks go back.")
        parsed = utc
    return pd.DatetimeIndex(parsed), bool(read_dayfirst)


# A time of day: 18:00, 18:00:00, 18.00.00 (UCI's air quality file), 6:30 PM.
TIME_OF_DAY = r"^(\d{1,2})[:.](\d{2})(?:[:.](\d{2}(?:\.\d+)?))?\s*([AaPp][Mm])?$"


def _with_times_of_day(dates, others, date_column, notes):
    """(dates, the column of times used or None): days that repeat, each at midnight, beside a
    column of times of day (UCI's household power and air quality files have a Date and a
    Time column) are read together as timestamps, with a note."""
    if not dates.duplicated().any() or (dates != dates.normalize()).any():
        return dates, None
    for name in others.columns:
        times = _times_of_day(others[name])
        if times is not None:
            notes.append(f"Dates: {date_column!r} holds days and {name!r} times of day: read "
                         "together as timestamps.")
            return pd.DatetimeIndex(dates + times), name
    return dates, None


def _times_of_day(column):
    """A TimedeltaIndex of a column whose every cell is a time of day, else None. Numbers
    count as hours.minutes (18.30, which pandas reads as a number) in a column named for
    times only (Time, Hour, Uhrzeit, Heure, Hora)."""
    if column.isna().any():
        return None
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        named = any(word in str(column.name).casefold()
                    for word in ("time", "hour", "uhrzeit", "heure", "hora"))
        hours = np.floor(column.astype("float64"))
        minutes = np.round((column.astype("float64") - hours) * 100)
        if not named or not (hours.between(0, 23).all() and minutes.between(0, 59).all()):
            return None
        return pd.TimedeltaIndex(pd.to_timedelta(hours * 3600 + minutes * 60, unit="s"))
    if not (column.dtype == object or pd.api.types.is_string_dtype(column)):
        return None
    parts = column.astype(str).str.strip().str.extract(TIME_OF_DAY)
    if parts[[0, 1]].isna().any().any():
        return None
    hours, minutes = parts[0].astype(int), parts[1].astype(int)
    seconds = parts[2].astype(float).fillna(0)
    noon = parts[3].str.lower()
    if (minutes > 59).any() or (seconds >= 60).any() or (
            hours > (12 if noon.notna().any() else 23)).any():
        return None
    hours = hours % 12 + 12 * (noon == "pm") if noon.notna().all() else hours
    return pd.TimedeltaIndex(pd.to_timedelta(hours * 3600 + minutes * 60 + seconds, unit="s"))


def _offset_changes_within_days(wall, utc):
    steps = np.diff(np.sort(utc.to_numpy()))
    return ((wall - utc).nunique() > 1 and len(steps) > 0
            and np.median(steps) < np.timedelta64(1, "D"))


def _offset(delta):
    minutes = int(pd.Timedelta(delta).total_seconds() // 60)
    return f"{'+' if minutes >= 0 else '-'}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


# Numbers that are dates, by their range: (low, high, what they are, to_datetime's options).
NUMBER_DATES = [
    (9.4e8, 4.1e9, "Unix time in seconds", {"unit": "s"}),  # 2000-2099
    (9.4e11, 4.1e12, "Unix time in milliseconds", {"unit": "ms"}),
    (18264, 73051, "Excel serial day numbers", {"unit": "D", "origin": "1899-12-30"}),
]


def _number_dates(numbers, column, where, notes):
    whole = (numbers % 1 == 0).all()
    if whole and numbers.between(1000, 2999).all():  # Years: 1700, 1701, ...
        return pd.to_datetime(numbers.astype(int).astype(str), format="%Y")
    if whole and numbers.between(10000101, 29991231).all():  # 20240131
        parsed = pd.to_datetime(numbers.astype(int).astype(str), format="%Y%m%d", errors="coerce")
        if parsed.notna().all():
            return parsed
    for low, high, what, options in NUMBER_DATES:
        if numbers.between(low, high).all():
            parsed = pd.to_datetime(numbers, **options).dt.round("s")
            notes.append(f"Dates: {column.name!r} holds numbers, read as {what} "
                         f"({numbers.iloc[0]:.15g} = {parsed.iloc[0]}).")
            return parsed
    raise DlrefError(f"{where}: column {column.name!r} holds plain numbers "
                     f"({listing(column.head(3), 3)}, ...), not dates. Without --date-column "
                     "the rows are taken as steps in file order.")


def _text_dates(column, where, notes, dayfirst=None):
    """Wall times, the UTC instants when every row gives its offset (else None), and whether
    dates like 03/04/2024 were read day first (`dayfirst`, or when None: a first number above
    12, or else the reading that gives regular steps)."""
    from dlref.data.columns import is_dayfirst

    text = column.astype(object).where(column.notna(), None)
    empty = np.flatnonzero(text.isna().to_numpy() | (text.astype(str).str.strip() == ""))
    if len(empty):
        raise DlrefError(f"{where}: column {column.name!r} has no date in "
                         f"{plural(len(empty), 'row')} (file lines {file_lines(empty, column)}).")
    text = text.astype(str).str.strip()
    # Offsets read apart from the wall time, so that mixed offsets (a DST change) parse.
    pattern = r"(Z|[+-]\d{2}:?\d{2})$"
    offsets = text.str.extract(pattern, expand=False)
    local = text.str.replace(pattern, "", regex=True)
    with warnings.catch_warnings():  # pandas' notes on format inference are not for users.
        warnings.simplefilter("ignore")
        if dayfirst is None:
            dayfirst = is_dayfirst(local)
            either = _either_way(local)  # 03/04/2024 and no day above 12 to tell.
        else:
            either = False
        parsed = pd.to_datetime(local, errors="coerce", format="mixed", dayfirst=dayfirst)
        if either:  # The reading that gives regular steps.
            other = pd.to_datetime(local, errors="coerce", format="mixed", dayfirst=True)
            if _irregularity(other) < _irregularity(parsed):
                parsed, dayfirst = other, True
                notes.append(f"Dates: {column.name!r} reads day first or month first alike (no "
                             "number above 12); read day first, which gives regular steps.")
    bad = np.flatnonzero(parsed.isna().to_numpy())
    if len(bad):
        raise DlrefError(
            f"{where}: column {column.name!r} has dates pandas cannot read in "
            f"{plural(len(bad), 'row')} (file lines {file_lines(bad, column)}; e.g. "
            f"{column.iloc[bad[0]]!r}). Write them as YYYY-MM-DD (or with a time).")
    if not offsets.notna().all():
        return parsed, None, dayfirst
    # Every row says its offset, so the instants are known too.
    digits = offsets.str.replace(":", "").replace("Z", "+0000")
    sign = np.where(digits.str[0] == "-", -1, 1)
    minutes = sign * (digits.str[1:3].astype(int) * 60 + digits.str[3:5].astype(int))
    return parsed, parsed - pd.to_timedelta(minutes, unit="min"), dayfirst


def _either_way(text):
    """Whether dates like 03/04/2024 in `text` read as day first or month first alike: no
    first or second number above 12 tells which."""
    parts = text.str.extract(r"^(\d{1,2})[/.-](\d{1,2})[/.-]\d{2,4}").dropna().astype(int)
    return len(parts) == len(text) and not (parts > 12).any().any()


def _irregularity(dates):
    """How much the steps between the sorted, distinct dates vary: their standard deviation
    over their mean (months of 28 to 31 days: 0.03; twelve days and a jump of a year: 3)."""
    steps = np.diff(np.sort(dates.dropna().unique())).astype("float64")
    return float(np.std(steps) / np.mean(steps)) if len(steps) > 1 else 0.0


def _sorted(series, others=None):
    """`series` in time order; `others` (the file's other columns) can explain a refusal."""
    order = np.argsort(series.dates.to_numpy(), kind="stable")
    if np.any(order != np.arange(len(order))):
        series.notes.append("Rows sorted by date.")
    dates, values = series.dates[order], series.values[order]
    # A row repeated whole (an export run twice, a copy-paste) says nothing new: kept once.
    repeated = pd.DataFrame({"date": dates, "value": values}).duplicated().to_numpy()
    if repeated.any():
        series.notes.append(f"Left out {plural(int(repeated.sum()), 'repeated row')} (the same "
                            "timestamp and value as a row before it).")
        dates, values = dates[~repeated], values[~repeated]
    duplicated = dates.duplicated(keep=False)
    if duplicated.any():
        shown = listing(sorted({str(d) for d in dates[duplicated]}), 5)
        raise DlrefError(f"{series.where}: {plural(int(duplicated.sum()), 'row')} share a "
                         f"timestamp ({shown}) with different values. "
                         + _why_shared(series.dates, others, dates[duplicated])
                         + "Keep one row per time (or aggregate them, e.g. a daily sum) and "
                         "try again.")
    return dataclasses.replace(series, dates=dates, values=values)


def _why_shared(dates, others, shared):
    """What may explain rows that share timestamps: a column that tells them apart (several
    series in one long table), or local clock times repeated when daylight-saving time ends
    (October or November in the north, March or April in the south)."""
    rows = dates.isin(shared)
    for name in others.columns if others is not None else []:
        keys = others[name][rows]
        if keys.notna().all() and 1 < keys.nunique() <= 50 and not pd.DataFrame(
                {"date": dates[rows], "key": keys.to_numpy()}).duplicated().any():
            values = listing(sorted(keys.astype(str).unique()), 4)
            return (f"Column {name!r} tells them apart ({values}): the file may hold one "
                    f"series per {name!r}; forecast one at a time, from a copy of the file with "
                    "only its rows. ")
    counts = pd.Series(shared).value_counts()
    steps = np.diff(dates.sort_values().unique().to_numpy())
    if ((counts == 2).all() and counts.index.month.isin([3, 4, 10, 11]).all()
            and len(steps) and np.median(steps) < np.timedelta64(1, "D")):
        return ("Local clock times repeat an hour when daylight-saving time ends: timestamps "
                "with their UTC offset (2021-10-31T02:00+01:00) or in UTC tell those apart. ")
    return ""


def _regular(series):
    """Missing timestamps of a regular series become gaps (filled later); an irregular series
    is taken as a sequence of steps, with a warning."""
    frequency = pd.infer_freq(series.dates) if len(series.dates) >= 3 else None
    if frequency is None and len(series.dates) >= 3:
        frequency = _frequency_with_gaps(series.dates)
    if frequency is None:
        series.notes.append("The dates are irregular: each row is taken as one step.")
        return series
    full = pd.date_range(series.dates[0], series.dates[-1], freq=frequency)
    missing = len(full) - len(series.dates)
    if missing > 0 and full.isin(series.dates).sum() == len(series.dates):
        values = pd.Series(series.values, index=series.dates).reindex(full).to_numpy()
        return dataclasses.replace(series, values=values, dates=full, frequency=frequency,
                                   added_timestamps=missing)
    return dataclasses.replace(series, frequency=frequency)


def _frequency_with_gaps(dates):
    """The frequency of a regular series with some timestamps missing, or None."""
    steps = pd.Series(dates[1:] - dates[:-1])
    for frequency in ("MS", "ME", "QS", "QE", "YS", "YE", "W", "D", "h", "min"):
        try:
            full = pd.date_range(dates[0], dates[-1], freq=frequency)
        except ValueError:
            continue
        if full.isin(dates).sum() == len(dates) and len(full) <= 2 * len(dates):
            return frequency
    return None if steps.nunique() > 1 else pd.tseries.frequencies.to_offset(steps[0]).freqstr


def _fill_values(series):
    values = pd.Series(series.values)
    if values.isna().all():
        raise DlrefError(f"{series.where}: column {series.name!r} has no values.")
    first, last = values.first_valid_index(), values.last_valid_index()
    if first > 0 or last < len(values) - 1:
        # Rows before the first value or after the last (future dates not known yet) are not
        # history: filling them would invent values.
        series.notes.append(f"Left out {plural(first + len(values) - 1 - last, 'row')} "
                            "without a value before the first or after the last value.")
        dates = series.dates[first:last + 1] if series.dates is not None else None
        series = dataclasses.replace(series, values=series.values[first:last + 1], dates=dates)
        values = pd.Series(series.values)
    if values.nunique() == 1:
        raise DlrefError(f"{series.where}: {series.name!r} has the same value in every row "
                         f"({values.iloc[0]:g}): there is nothing to forecast.")
    gaps = int(values.isna().sum())
    if gaps:
        values = values.interpolate(limit_direction="both")
        added = min(series.added_timestamps, gaps)
        parts = [plural(added, "missing timestamp")] if added else []
        parts += [plural(gaps - added, "empty value")] if gaps > added else []
        series.notes.append(f"Missing values: {plural(gaps, 'gap')} in {series.name!r} "
                            f"({' and '.join(parts)}) filled by linear interpolation.")
    return dataclasses.replace(series, values=values.to_numpy(dtype="float64"))


AGGREGATES = ("mean", "sum", "last", "max", "min")


def resampled(series, rule, how="mean"):
    """`series` as one value per period `rule` (a pandas frequency: h, D, W, MS, ...), the
    `how` of each period's values (AGGREGATES), with a note; a period without values is a
    gap, interpolated (a sum of an irregular series' events is 0 there). Long fine-grained
    series (a year of minutes is 525,600 steps) train in hours that way, and forecast the step
    that matters; irregular ones (sales as they happen) become regular."""
    if how not in AGGREGATES:
        raise DlrefError(f"aggregate must be one of {', '.join(AGGREGATES)}, got {how!r}.")
    if series.dates is None:
        raise DlrefError(f"resample={rule} needs the series' dates: give --date-column COLUMN.")
    try:
        offset = pd.tseries.frequencies.to_offset(rule)
    except ValueError:
        raise DlrefError(f"resample={rule!r} is not a pandas frequency: use e.g. min, 15min, h, "
                         "D, W, MS (month starts), QS, YS.") from None
    steps = np.diff(series.dates.to_numpy())
    try:
        finer = len(steps) and pd.Timedelta(offset) < pd.Timedelta(np.median(steps))
    except ValueError:  # Months, weeks, years: no fixed length, and none finer than a day.
        finer = False
    if finer:
        raise DlrefError(f"resample={rule} is finer than the series' steps "
                         f"({series.frequency or pd.Timedelta(np.median(steps))}): a period "
                         "must hold one step or more.")
    grouped = pd.Series(series.values, index=series.dates).resample(offset)
    # A period without values: a gap in a regular series (the meter was off), but none of an
    # irregular one's events (no sale that day), whose sum is then 0.
    values = (grouped.sum(min_count=1 if series.frequency else 0) if how == "sum"
              else getattr(grouped, how)())
    # A first or last period that a regular series covers in part (a file starting at 17:24)
    # would be a partial sum or a mean of other hours: left out. Months of 28 to 31 days hold
    # over 90 % of the median month's steps, so a whole month stays.
    counts = grouped.count().to_numpy()
    short = counts < 0.9 * np.median(counts) if series.frequency else np.zeros(len(counts), bool)
    first, last = int(short[0] and len(counts) > 2), len(counts) - int(
        short[-1] and len(counts) > 2)
    partial = first + len(counts) - last
    values = values.iloc[first:last]
    note = (f"Resampled: {len(series.values):,} values to {len(values):,} periods of {rule} "
            f"(the {how} of each; --set resample)"
            + (f"; left out {plural(partial, 'first or last period')} the data covers in part."
               if partial else "."))
    return _fill_values(dataclasses.replace(
        series, values=values.to_numpy(dtype="float64"), dates=pd.DatetimeIndex(values.index),
        notes=[*series.notes, note], frequency=offset.freqstr, added_timestamps=0))


def season_of(series, override=0):
    """Season length in steps: `override` when set, else from the frequency (1: none)."""
    if override:
        return int(override)
    if not series.frequency:
        return 1
    letters = "".join(c for c in pd.tseries.frequencies.to_offset(series.frequency).name
                      if c.isalpha()).split("-")[0]
    return SEASONS.get(letters, SEASONS.get(letters[:1], 1))


# --- Splits and windows --------------------------------------------------------------------------


def prepare(series, window, val_fraction, test_fraction, season=0, test_start=""):
    """Differenced, scaled windows split by time; meta holds what a forecast needs later.

    Step t's target is the change from t-1 to t, its input the `window` changes before it, so
    the first forecastable step is window + 1. Every split keeps its own targets; a window may
    reach back into the split before it (those values are history, not answers).

    Args:
        test_start: a date: the test period starts there (instead of `test_fraction`).
    """
    count = len(series.values)
    if count < window + 8:
        raise DlrefError(f"{series.where}: {plural(count, 'value')} in {series.name!r}, too "
                         f"few for windows of {window} (need at least {window + 8}). Lower "
                         "window (--set window=N) or give a longer series.")
    changes = np.diff(series.values)
    steps = np.arange(window, len(changes))  # Index into changes; level index is step + 1.
    test_size = (_test_size_from(series, steps, test_start) if test_start
                 else max(1, round(len(steps) * test_fraction)))
    val_size = max(1, round((len(steps) - test_size) * val_fraction / (1 - test_fraction)))
    train_size = len(steps) - test_size - val_size
    if train_size < 2:
        raise DlrefError(f"{series.where}: only {plural(max(train_size, 0), 'window')} left "
                         "to train on before the validation and test periods. Give a longer "
                         "series, or a later test_start / smaller fractions.")
    low, high = _range(changes[:steps[train_size - 1] + 1])
    scaled = scale(changes, low, high)
    splits = dict(zip(("train", "val", "test"),
                      np.split(steps, [train_size, len(steps) - test_size]), strict=True))
    arrays = {name: windows(scaled, part, window) for name, part in splits.items()}
    meta = _meta(series, window, low, high, season_of(series, season), splits)
    extra = {"values": series.values, "dates": series.dates, "steps": splits}
    every = (f"Frequency: {series.frequency}" if series.frequency
             else "Frequency: none (one row, one step)")
    lines = [_rows_line(series, splits), f"{every}; season {meta['season']} steps "
             f"({'--set season=N to change it' if not season else 'from --set season'})."]
    shaping = [window, val_fraction, test_start or test_fraction]
    return Dataset(train=arrays["train"], val=arrays["val"], test=arrays["test"], meta=meta,
                   fingerprint=_fingerprint(series, shaping), notes=series.notes + lines,
                   extra=extra)


def trim_to_batches(data, batch_size):
    """The training and validation windows cut to whole batches of `batch_size`, for a stateful
    network: its batch size is part of the model, so a smaller last batch cannot run.

    The oldest windows of each split go, so each split keeps its most recent data. The test
    split stays whole: the stateless copy of the network that is evaluated takes any batch size.
    """
    sizes = {name: len(getattr(data, name)[1]) for name in ("train", "val")}
    if min(sizes.values()) < batch_size:
        raise DlrefError(
            f"A stateful network trains and validates in whole batches of {batch_size} "
            f"windows, and this series has {sizes['train']:,} training and {sizes['val']:,} "
            f"validation windows. Lower batch_size (--set batch_size=N, at most "
            f"{min(sizes.values())}), give a longer series, or train without stateful.")
    kept, steps, left_out = {}, dict(data.extra["steps"]), []
    for name, size in sizes.items():
        first = size % batch_size  # The oldest windows, which fill no whole batch.
        x, y = getattr(data, name)
        kept[name] = (x[first:], y[first:])
        steps[name] = steps[name][first:]
        label = "training" if name == "train" else "validation"
        left_out += [plural(first, f"{label} window")] if first else []
    shown = f"train {len(kept['train'][1]):,}, validation {len(kept['val'][1]):,}"
    note = (f"Stateful batches of {batch_size}: left out the oldest {' and '.join(left_out)} "
            f"({shown}: whole batches, the most recent data kept)." if left_out else
            f"Stateful batches of {batch_size}: the windows fill whole batches ({shown}).")
    digest = hashlib.sha256(f"{data.fingerprint} batches of {batch_size}".encode())
    return dataclasses.replace(data, train=kept["train"], val=kept["val"],
                               extra={**data.extra, "steps": steps}, notes=data.notes + [note],
                               fingerprint=digest.hexdigest()[:16])


def _test_size_from(series, steps, test_start):
    """How many forecast steps lie on or after `test_start` (a date)."""
    if series.dates is None:
        raise DlrefError("test_start is a date, and this series has none: give --date-column, "
                         "or split by share with --set test_fraction=F.")
    try:
        start = pd.Timestamp(test_start)
    except ValueError:
        raise DlrefError(f"test_start {test_start!r} is not a date (write YYYY-MM-DD).") from None
    size = int(np.sum(series.dates[steps + 1] >= start))
    if not 0 < size < len(steps):
        raise DlrefError(f"test_start {test_start} leaves no test period or nothing before "
                         f"it: the series' forecastable dates run from "
                         f"{series.dates[steps[0] + 1].date()} to {series.dates[-1].date()}.")
    return size


def _range(changes):
    low, high = float(np.min(changes)), float(np.max(changes))
    return (low, high) if high > low else (low - 1.0, high + 1.0)


def scale(changes, low, high):
    return (2 * (changes - low) / (high - low) - 1).astype("float32")


def unscale(scaled, meta):
    low, high = meta["scaler"]["low"], meta["scaler"]["high"]
    return (np.asarray(scaled, dtype="float64") + 1) * (high - low) / 2 + low


def windows(scaled, steps, window):
    x = np.stack([scaled[s - window:s] for s in steps])[..., None] if len(steps) else \
        np.zeros((0, window, 1), "float32")
    return x.astype("float32"), scaled[steps].astype("float32")


def _meta(series, window, low, high, season, splits):
    last = series.dates[-1].isoformat() if series.dates is not None else None
    return {"task": "forecast", "target": series.name, "window": window, "season": season,
            "scaler": {"low": low, "high": high}, "frequency": series.frequency,
            "dayfirst": series.dayfirst or None, "last_date": last, "source": series.where,
            "test_start": _when(series, int(splits["test"][0]) + 1)}


def _when(series, index):
    """A step as a user reads it: its date, with the time when the series is finer than days."""
    return moment_text(series.dates, index)


def moment_text(dates, index):
    """Step `index` as a user reads it: its date, with the time of day when it has one."""
    if dates is None:
        return f"step {index}"
    moment = dates[index]
    return str(moment.date()) if moment == moment.normalize() else str(moment)


def _rows_line(series, splits):
    sizes = {name: len(part) for name, part in splits.items()}
    return (f"Rows: {plural(len(series.values), 'value')} -> windows: train "
            f"{sizes['train']:,}, validation {sizes['val']:,}, test {sizes['test']:,} (split by "
            f"time; the test "
            f"period starts at {_when(series, int(splits['test'][0]) + 1)})")


def _fingerprint(series, shaping):
    digest = hashlib.sha256(np.ascontiguousarray(series.values).tobytes())
    if series.dates is not None:
        digest.update(series.dates.asi8.tobytes())
    digest.update(json.dumps(shaping).encode())
    return digest.hexdigest()[:16]
