"""Drawn images with known contents (shapes to count), generated locally: no downloads."""

from __future__ import annotations

import random

import PIL.Image
import PIL.ImageDraw

COLORS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220), "yellow": (230, 200, 40)}


def shapes_image(n: int, size: tuple[int, int] = (224, 224), color: str = "red", seed: int = 0) -> PIL.Image.Image:
    """A white image with n filled circles of `color` at random non-overlapping places."""
    rng = random.Random(seed)
    image = PIL.Image.new("RGB", size, (255, 255, 255))
    draw = PIL.ImageDraw.Draw(image)
    radius = max(4, min(size) // 12)
    placed: list[tuple[int, int]] = []
    for _ in range(n):
        for _attempt in range(200):
            x = rng.randint(radius, size[0] - radius - 1)
            y = rng.randint(radius, size[1] - radius - 1)
            if all((x - a) ** 2 + (y - b) ** 2 > (2.2 * radius) ** 2 for a, b in placed):
                break
        placed.append((x, y))
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=COLORS[color])
    return image
