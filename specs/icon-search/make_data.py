"""Regenerate data/pairs.jsonl and data/images/*.png for the icon-search example (deterministic).

    python specs/icon-search/make_data.py      # needs Pillow

An image table: each row names a 32x32 PNG icon (`image`, relative to data/images) and a caption
that describes it (`caption`). Icons are a coloured shape (circle, square, triangle, ring, cross,
bar chart) of some size and position on a coloured background; the caption says so in one of several
phrasings. No image repeats, and no caption is a near duplicate of another (Jaccard of character
5-grams above 0.7 is rejected), so a random split cannot leak a test pair into training.
`draw_pair`, `shingles` and `near` are shared with models/make_tiny_clip.py, which pre-trains the
example's base on pairs from other random streams (none of them an image or a near-copy caption
of this data).
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import re
import shutil
from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
SEED = 5
ROWS = 160
SIZE = 32
MAX_SIMILARITY = 0.7
# ftc's private-data rule (FT214) also scans the content hash its image reader adds to each row,
# and a long run of digits in a hex digest can pass its card-number check; such icons are
# redrawn so that the example checks clean.
DIGIT_RUN = re.compile(r"\d{12,}")

COLOURS = {"red": (210, 40, 40), "orange": (240, 140, 20), "yellow": (235, 210, 40), "green": (40, 160, 70),
           "teal": (20, 150, 150), "blue": (40, 80, 200), "purple": (130, 60, 170), "black": (20, 20, 20)}
BACKGROUNDS = {"white": (250, 250, 250), "light grey": (200, 200, 200), "cream": (245, 235, 200),
               "pale blue": (200, 220, 245), "dark grey": (70, 70, 70)}
SHAPES = ("circle", "square", "triangle", "ring", "cross", "bar chart")
SIZES = {"small": 5, "medium": 8, "large": 12}
PLACES = {"centred": (16, 16), "in the top left corner": (9, 9), "in the top right corner": (23, 9),
          "in the bottom left corner": (9, 23), "in the bottom right corner": (23, 23)}
PHRASES = [
    "a {size} {colour} {shape} {place} on a {bg} background",
    "{colour} {shape} icon, {size}, {place}, {bg} backdrop",
    "icon showing one {size} {shape} in {colour} {place} against {bg}",
    "{bg} tile with a {colour} {shape} {place}; the {shape} is {size}",
    "simple flat icon: {colour} {shape} ({size}) {place} over a {bg} fill",
]


def draw(shape: str, colour: tuple[int, int, int], bg: tuple[int, int, int], r: int, at: tuple[int, int]) -> Image.Image:
    img = Image.new("RGB", (SIZE, SIZE), bg)
    d = ImageDraw.Draw(img)
    x, y = at
    r = min(r, x, y, SIZE - 1 - x, SIZE - 1 - y)
    box = [x - r, y - r, x + r, y + r]
    if shape == "circle":
        d.ellipse(box, fill=colour)
    elif shape == "square":
        d.rectangle(box, fill=colour)
    elif shape == "triangle":
        d.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=colour)
    elif shape == "ring":
        d.ellipse(box, outline=colour, width=max(1, r // 3))
    elif shape == "cross":
        w = max(1, r // 3)
        d.rectangle([x - r, y - w, x + r, y + w], fill=colour)
        d.rectangle([x - w, y - r, x + w, y + r], fill=colour)
    else:  # bar chart
        for i in (-1, 0, 1):
            d.rectangle([x + i * r // 2 - 1, y - r, x + i * r // 2, y + r], fill=colour)
    return img


def shingles(text: str) -> set[str]:
    norm = re.sub(r"\s+", " ", text.lower())
    return {norm[i:i + 5] for i in range(max(1, len(norm) - 4))}


def draw_pair(rng: random.Random) -> tuple[dict[str, str], Image.Image, str] | None:
    """One random draw: (its words: size, colour, shape, place, bg; the icon; a phrasing template),
    or None for a colour on its own background. `template.format(**words)` is the caption."""
    colour, bg = rng.choice(sorted(COLOURS)), rng.choice(sorted(BACKGROUNDS))
    shape, size, place = rng.choice(SHAPES), rng.choice(sorted(SIZES)), rng.choice(sorted(PLACES))
    if COLOURS[colour] == BACKGROUNDS.get(bg):
        return None
    words = {"size": size, "colour": colour, "shape": shape, "place": place, "bg": bg}
    return words, draw(shape, COLOURS[colour], BACKGROUNDS[bg], SIZES[size], PLACES[place]), rng.choice(PHRASES)


def near(sh: set[str], kept: list[set[str]]) -> bool:
    return any(len(sh & k) / len(sh | k) > MAX_SIMILARITY for k in kept)


def generate(seed: int, rows: int) -> list[tuple[str, bytes]]:
    """`rows` distinct (caption, PNG bytes) pairs from the random stream `seed`: no image repeats
    and no caption is a near duplicate of another."""
    rng = random.Random(seed)
    out: list[tuple[str, bytes]] = []
    kept: list[set[str]] = []
    seen: set[bytes] = set()
    tries = 0
    while len(out) < rows:
        tries += 1
        assert tries < 100000, f"cannot find enough distinct pairs ({len(out)} found)"
        drawn = draw_pair(rng)
        if drawn is None:
            continue
        words, img, phrase = drawn
        caption = phrase.format(**words)
        sh = shingles(caption)
        if near(sh, kept):
            continue
        buf = io.BytesIO()
        img.save(buf, format="PNG", optimize=True)
        if img.tobytes() in seen or DIGIT_RUN.search(hashlib.sha256(buf.getvalue()).hexdigest()):
            continue
        seen.add(img.tobytes())
        kept.append(sh)
        out.append((caption, buf.getvalue()))
    return out


def main() -> None:
    images = HERE / "data" / "images"
    if images.exists():
        shutil.rmtree(images)
    images.mkdir(parents=True)
    rows: list[dict[str, str]] = []
    for i, (caption, png) in enumerate(generate(SEED, ROWS)):
        name = f"icon_{i:03d}.png"
        (images / name).write_bytes(png)
        rows.append({"image": name, "caption": caption})
    out = HERE / "data" / "pairs.jsonl"
    with out.open("w", encoding="utf-8", newline="\n") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} pairs to {out.relative_to(HERE)} and {len(rows)} images to data/images/")


if __name__ == "__main__":
    main()
