"""Writes typed_digits/ and shapes/ (run from examples/): the image folders of the README tour."""

import os
import random

import matplotlib
from PIL import Image, ImageDraw, ImageFont

FONT = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data/fonts/ttf/DejaVuSans-Bold.ttf")

# typed_digits/: 0-9 typed in DejaVu Sans Bold, fitted to a 20x20 box in 28x28 as MNIST's are.
os.makedirs("typed_digits", exist_ok=True)
for digit in range(10):
    big = Image.new("L", (112, 112), 0)
    ImageDraw.Draw(big).text((56, 56), str(digit), fill=255, anchor="mm",
                             font=ImageFont.truetype(FONT, 80))
    crop = big.crop(big.getbbox())
    scale = 20 / max(crop.size)
    crop = crop.resize((max(1, round(crop.width * scale)), round(crop.height * scale)),
                       Image.Resampling.LANCZOS)
    canvas = Image.new("L", (28, 28), 0)
    canvas.paste(crop, ((28 - crop.width) // 2, (28 - crop.height) // 2))
    canvas.save(f"typed_digits/digit-{digit}.png")

# shapes/: circles, squares and triangles drawn at random sizes, colours and positions, saved as
# the files people have: mixed sizes, PNG, JPEG (upper-case .JPG) and GIF, RGB, grayscale and
# RGBA; plus a truncated JPEG and a notes file, which dlref skips (the first with a warning).
random.seed(0)
for shape in ("circle", "square", "triangle"):
    os.makedirs(f"shapes/{shape}", exist_ok=True)
    for index in range(30):
        size = random.choice([48, 64, 80, 100])
        background = tuple(random.randint(0, 90) for _ in range(3))
        colour = tuple(random.randint(150, 255) for _ in range(3))
        image = Image.new("RGB", (size, size), background)
        draw = ImageDraw.Draw(image)
        radius = random.uniform(0.2, 0.4) * size
        x, y = (random.uniform(radius, size - radius) for _ in range(2))
        if shape == "circle":
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour)
        elif shape == "square":
            draw.rectangle((x - radius, y - radius, x + radius, y + radius), fill=colour)
        else:
            draw.polygon([(x, y - radius), (x - radius, y + radius), (x + radius, y + radius)],
                         fill=colour)
        kind = index % 5
        if kind == 0:
            image.convert("L").save(f"shapes/{shape}/{shape}-{index:02d}.png")
        elif kind == 1:
            image.save(f"shapes/{shape}/{shape}-{index:02d}.JPG", quality=90)
        elif kind == 2:
            image.convert("P", palette=Image.Palette.ADAPTIVE).save(
                f"shapes/{shape}/{shape}-{index:02d}.gif")
        elif kind == 3:
            rgba = image.convert("RGBA")
            rgba.putalpha(230)
            rgba.save(f"shapes/{shape}/{shape}-{index:02d}.png")
        else:
            image.save(f"shapes/{shape}/{shape}-{index:02d}.png")
with open("shapes/square/square-01.JPG", "rb") as handle:
    data = handle.read()
with open("shapes/square/square-30.jpg", "wb") as handle:
    handle.write(data[:len(data) // 3])  # Truncated, as an interrupted copy leaves it.
with open("shapes/notes.txt", "w") as handle:
    handle.write("Shapes drawn with Pillow for dlref's README tour.\n")
