r"""
---
title: Datasets we can generate
summary: Coloured shapes with known attributes and an analytic checker that reads them back from pixels, MNIST-like digits drawn with a bundled font, and any folder of images. Nothing to download.
---

# Datasets we can generate

Every chapter of this course trains a model on a laptop CPU in minutes, so every chapter
needs data that is small, always at hand and free of downloads. This page provides
three datasets:

- **Shapes**: one or two coloured circles, squares or triangles on black. We chose
  every attribute of every image, so each image comes with a class label and an English
  caption ("a small red circle in the top left").
- **Digits**: MNIST-like handwritten-looking digits, drawn from the font that ships with
  Pillow and then bent by a random affine transform.
- **ImageFolder**: your own pictures, from any folder.

## Why generate the data ourselves

The usual way to score an image generator is the Fréchet Inception Distance: embed
50 000 samples with a network trained on ImageNet and compare statistics. That needs a
download, a GPU and hours, and it answers a vague question ("do the samples look like
the data?") with a number that is hard to interpret.

With Shapes we can do much better. A conditional model asked for "a large blue triangle
in the centre" must draw exactly that, and a few lines of arithmetic — no learned judge
— can read back from the pixels which shape, colour, size and position were drawn
([[#read_shapes]]). The fraction of samples whose attributes come back right is a
metric that is exact, cheap and easy to explain: "the model draws the right colour 98%
of the time but the right shape only 70%". The `annogen.metrics` module turns this
checker into per-attribute accuracies.

## What an item looks like

All datasets here are ordinary `torch.utils.data.Dataset`s. Item $i$ is a dictionary

    {"image": float32 tensor (C, H, W) in [-1, 1],
     "label": int64 scalar tensor (-1 when there is none),
     "caption": str}

and each dataset tells its `channels`, `size` ($H = W$), `num_classes` (0 when unlabelled)
and `class_names`.
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from collections import deque
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, ImageOps, features
from torch.utils.data import Dataset

# ## Pixels to tensors
#
# Images are stored as 8-bit pixels $p \in \{0, \dots, 255\}$. Models see them scaled to
# $[-1, 1]$, centred on zero like the noise of a diffusion model and the output of a
# `tanh`:
#
# $$
# x = \frac{p}{127.5} - 1 .
# $$


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """uint8 pixels, (H, W) or (H, W, C), to a float32 tensor (C, H, W) in [-1, 1]."""
    p = np.asarray(pixels, dtype=np.float32)
    p = p[None] if p.ndim == 2 else p.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(p / 127.5 - 1.0, dtype=np.float32))


def make_item(image: torch.Tensor, label: int, caption: str) -> dict:
    return {"image": image, "label": torch.tensor(label, dtype=torch.int64), "caption": caption}


# ## Each item depends on the seed and its index only
#
# A generated dataset is not stored anywhere: item $i$ is drawn afresh every time it is
# asked for. For that to be a *dataset* and not a stream of noise, item $i$ must come
# out the same every time — whether it is the first item read or the last, whether one
# process reads it or one of eight data-loader workers, before or after a training run
# is resumed. So each item gets its own random generator, seeded by the pair
# $(\text{seed}, i)$ through NumPy's `SeedSequence`, which mixes the pair into
# independent streams (seeds $i$ and $i+1$ give unrelated images).
#
# That is also how the chapters get **held-out** images: the same generator with another
# seed. Training uses seed $s$ (`--data-seed`, 0 by default), the held-out images
# $s + 1$, a second real draw (the floor of a toy FID) $s + 2$. Seeding with the pair
# matters here: had we written `default_rng(seed + i)`, a natural slip, item $j$ of seed
# $s + 1$ would be item $j + 1$ of seed $s$, and every "held-out" image a training image.
# The tests check that no held-out item is drawn from the stream of any training item.
# One caveat belongs to `shapes` itself: at 32 pixels there are at most 1,890 different
# pictures with one shape (3 kinds, 7 colours, 2 sizes, 5 cells, 9 jitters), and a
# training set of 10,000 images holds nearly all of them. So about half of any held-out
# draw, its one-shape images, also occurs in the training set by chance; the two-shape
# images, of which there are millions, almost never do. Held-out scores on `shapes`
# measure the distribution more than generalisation to unseen pictures.


def item_rng(seed: int, i: int) -> np.random.Generator:
    return np.random.default_rng([seed, i])


def check_index(i: int, n: int) -> int:
    i = int(i)
    if i < 0:
        i += n
    if not 0 <= i < n:
        raise IndexError(f"index {i} out of range for a dataset of {n} items")
    return i


# # Shapes
#
# ## The vocabulary
#
# Four attributes, each from a short list of names. The colours are the seven corners
# of the RGB cube other than black (the background). They are as far apart as colours
# can be — any two differ by 255 in at least one channel — which will make reading
# them back trivial and robust.

SHAPES = ("circle", "square", "triangle")
COLOURS = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "magenta": (255, 0, 255),
    "cyan": (0, 255, 255),
    "white": (255, 255, 255),
}
COLOUR_NAMES = tuple(COLOURS)
SIZES = ("small", "large")
POSITIONS = ("top left", "top right", "bottom left", "bottom right", "centre")


# ## Geometry
#
# For an image of side $S$, a shape fills a $d \times d$ box, $d$ odd so that the shape
# has a middle pixel. The two sizes are about a tenth and a fifth of the image,
#
# $$
# d_\text{small} = 2 \max(2, \operatorname{round}(0.1 S)) + 1, \qquad
# d_\text{large} = 2 \operatorname{round}(0.2 S) + 1,
# $$
#
# which is 7 and 13 pixels at $S = 32$: the large shape is about twice as wide, so a
# glance — or a threshold halfway between — tells them apart. The five positions are
# the centres of the four quadrants, $(S/4, S/4)$ to $(3S/4, 3S/4)$, and the centre of
# the image, $(S/2, S/2)$ (coordinates are $(x, y)$, $y$ pointing down).


def diameters(S: int) -> dict[str, int]:
    return {"small": 2 * max(2, round(0.1 * S)) + 1, "large": 2 * round(0.2 * S) + 1}


def cell_centres(S: int) -> dict[str, tuple[float, float]]:
    q, h, t = S / 4, S / 2, 3 * S / 4
    return {"top left": (q, q), "top right": (t, q), "bottom left": (q, t),
            "bottom right": (t, t), "centre": (h, h)}


# ## Drawing by pixel centres
#
# We do not use a drawing library for the shapes: antialiased edges would blend colours
# and make the read-back fuzzy, and the exact pixels a library picks are its own
# business. Our rule is one line of geometry per shape: pixel $(u, v)$ — its centre is
# at $(u + \tfrac12, v + \tfrac12)$ — belongs to a shape whose box has top-left corner
# $(x_0, y_0)$ and centre $(c_x, c_y) = (x_0 + d/2, y_0 + d/2)$ when its centre lies
#
# - in the box, for the **square**;
# - in the disc $(u + \tfrac12 - c_x)^2 + (v + \tfrac12 - c_y)^2 \le (d/2)^2$, for the **circle**;
# - under the apex $(c_x, y_0)$, inside the two sides that widen by one pixel per two rows,
#   $|u + \tfrac12 - c_x| \le (v + \tfrac12 - y_0)/2$, for the upward **triangle**
#   (base $d$, height $d$).
#
# The three shapes then fill about $1$, $\pi/4 \approx 0.79$ and $1/2$ of their box:
# that is how [[#read_shapes]] will tell them apart.


def shape_mask(shape: str, x0: int, y0: int, d: int, S: int) -> np.ndarray:
    v, u = np.mgrid[0:S, 0:S] + 0.5  # pixel centres
    in_box = (u > x0) & (u < x0 + d) & (v > y0) & (v < y0 + d)
    c_x, c_y = x0 + d / 2, y0 + d / 2
    if shape == "square":
        return in_box
    if shape == "circle":
        return (u - c_x) ** 2 + (v - c_y) ** 2 <= (d / 2) ** 2
    if shape == "triangle":
        return in_box & (np.abs(u - c_x) <= (v - y0) / 2)
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def draw_shapes(placed: list[dict], S: int) -> np.ndarray:
    """Paint placed shapes (dicts with shape, colour, x0, y0, d) on a black S x S canvas."""
    canvas = np.zeros((S, S, 3), dtype=np.uint8)
    for s in placed:
        canvas[shape_mask(s["shape"], s["x0"], s["y0"], s["d"], S)] = COLOURS[s["colour"]]
    return canvas


# ## Choosing a layout
#
# Each attribute is drawn uniformly. The box is centred on its cell, up to a jitter of
# $\pm\lfloor S/32 \rfloor$ pixels so that the model cannot memorise one exact picture
# per class, and clamped inside the image. A second shape must sit in a different cell
# and its box must stay at least $g = \max(1, \lfloor S/16 \rfloor)$ pixels clear of the
# first one's, so that two shapes never touch, even when they share a colour. Some
# combinations cannot be placed (a large shape in the centre leaves no room in the
# corners at $S = 32$); we simply draw the pair again until it fits. Two corners
# always fit when the jitter is zero, so a fitting pair comes up after a few tries (and
# pairs with a shape in the centre are rarer than the others).
#
# Finally the shapes are listed in the order of `POSITIONS`. The list is then the same
# for the caption, the label and [[#read_shapes]], which sorts what it finds the same
# way: a checker's answer can be compared with `attributes(i)` as a plain list.


def place_shape(rng: np.random.Generator, S: int) -> dict:
    s = {"shape": SHAPES[rng.integers(len(SHAPES))],
         "colour": COLOUR_NAMES[rng.integers(len(COLOURS))],
         "size": SIZES[rng.integers(len(SIZES))],
         "position": POSITIONS[rng.integers(len(POSITIONS))]}
    d = diameters(S)[s["size"]]
    c_x, c_y = cell_centres(S)[s["position"]]
    j = S // 32
    jitter_x, jitter_y = rng.integers(-j, j + 1, size=2)
    s["x0"] = int(min(max(math.floor(c_x - d / 2 + 0.5) + jitter_x, 0), S - d))
    s["y0"] = int(min(max(math.floor(c_y - d / 2 + 0.5) + jitter_y, 0), S - d))
    s["d"] = d
    return s


def apart(a: dict, b: dict, gap: int) -> bool:
    """True when the boxes of a and b are at least `gap` pixels apart along x or along y."""
    return (a["x0"] + a["d"] + gap <= b["x0"] or b["x0"] + b["d"] + gap <= a["x0"]
            or a["y0"] + a["d"] + gap <= b["y0"] or b["y0"] + b["d"] + gap <= a["y0"])


def describe(s: dict) -> str:
    return f"a {s['size']} {s['colour']} {s['shape']} in the {s['position']}"


# ## The dataset
#
# The class label is that of the first shape, its shape and colour combined into one
# of $|\text{SHAPES}| \cdot |\text{COLOURS}| = 21$ classes:
#
# $$
# y = \text{shape index} \cdot |\text{COLOURS}| + \text{colour index} .
# $$
#
# The caption names every shape: "a small red circle in the top left and a large blue
# square in the bottom right".

class Shapes(Dataset):
    r"""`n` images of side `size` (at least 16), each with one shape, or one or two when
    `max_shapes` is 2; item $i$ depends only on `(seed, i)`."""

    channels = 3
    num_classes = len(SHAPES) * len(COLOURS)
    class_names = [f"{c} {s}" for s in SHAPES for c in COLOUR_NAMES]

    def __init__(self, n: int = 10_000, size: int = 32, seed: int = 0, max_shapes: int = 2):
        if size < 16:
            raise ValueError(f"Shapes needs images of at least 16 pixels, not {size}")
        if max_shapes not in (1, 2):
            raise ValueError(f"max_shapes must be 1 or 2, not {max_shapes}")
        if n < 0 or seed < 0:
            raise ValueError("n and seed must not be negative")
        self.n, self.size, self.seed, self.max_shapes = int(n), int(size), int(seed), max_shapes

    def __len__(self) -> int:
        return self.n

    def layout(self, i: int) -> list[dict]:
        """The placed shapes of item i: attributes plus box (x0, y0, d), in POSITIONS order."""
        S = self.size
        rng = item_rng(self.seed, check_index(i, self.n))
        k = 1 if self.max_shapes == 1 else int(rng.integers(1, 3))
        gap = max(1, S // 16)
        while True:
            placed = [place_shape(rng, S) for _ in range(k)]
            if k == 1 or (placed[0]["position"] != placed[1]["position"]
                          and apart(placed[0], placed[1], gap)):
                return sorted(placed, key=lambda s: POSITIONS.index(s["position"]))

    def attributes(self, i: int) -> list[dict]:
        """[{shape, colour, size, position}, ...] of item i, in POSITIONS order."""
        keys = ("shape", "colour", "size", "position")
        return [{k: s[k] for k in keys} for s in self.layout(i)]

    def __getitem__(self, i: int) -> dict:
        placed = self.layout(i)
        first = placed[0]
        label = SHAPES.index(first["shape"]) * len(COLOURS) + COLOUR_NAMES.index(first["colour"])
        caption = " and ".join(describe(s) for s in placed)
        return make_item(to_tensor(draw_shapes(placed, self.size)), label, caption)


# ## The checker: reading shapes back from pixels
#
# Given any RGB image in $[-1, 1]$ — ours, or one a model generated — we recover the
# list of shapes with no learning at all. Generated images are imperfect (soft edges,
# colours a little off, stray pixels), so each step leaves a margin.
#
# **Colour.** Because the palette is the corners of the RGB cube, the nearest palette
# colour of a pixel $x = (x_r, x_g, x_b)$ is found channel by channel: each channel is
# "on" when it is above the midpoint $0$. Three bits give a code
#
# $$
# k = [x_r > 0] + 2\,[x_g > 0] + 4\,[x_b > 0],
# $$
#
# with $k = 0$ for the black background. A pixel must be off by a full unit in some
# channel (half the range) before its colour changes.
#
# **Shapes are connected regions of one colour.** A flood fill collects each region of
# equal non-zero code (8-connected: the staircase side of a triangle stays one piece).
# Regions smaller than a quarter of the smallest shape we draw (a small triangle,
# about $d_\text{small}^2/2$ pixels) are specks and are ignored.

CODE_TO_COLOUR = {(r > 127) + 2 * (g > 127) + 4 * (b > 127): name
                  for name, (r, g, b) in COLOURS.items()}


def colour_codes(image: torch.Tensor) -> np.ndarray:
    on = (image > 0).numpy()
    return on[0] * 1 + on[1] * 2 + on[2] * 4


def connected_regions(codes: np.ndarray) -> list[tuple[int, list[tuple[int, int]]]]:
    """(code, [(row, col), ...]) for each 8-connected region of equal non-zero code."""
    H, W = codes.shape
    grid = codes.tolist()
    seen = [[False] * W for _ in range(H)]
    regions = []
    for y in range(H):
        for x in range(W):
            k = grid[y][x]
            if k == 0 or seen[y][x]:
                continue
            seen[y][x] = True
            queue, pixels = deque([(y, x)]), []
            while queue:
                py, px = queue.popleft()
                pixels.append((py, px))
                for ny in (py - 1, py, py + 1):
                    for nx in (px - 1, px, px + 1):
                        if 0 <= ny < H and 0 <= nx < W and not seen[ny][nx] and grid[ny][nx] == k:
                            seen[ny][nx] = True
                            queue.append((ny, nx))
            regions.append((k, pixels))
    return regions


# **Shape.** Let a region have area $A$ (pixels) and bounding box $w \times h$. Two
# numbers describe its form: how far its mass sits below the middle of the box, and
# how much of the box it fills,
#
# $$
# \delta = \frac{\bar v - (v_\text{top} + h/2)}{h}, \qquad \rho = \frac{A}{w h},
# $$
#
# where $\bar v$ is the mean row of its pixel centres. A square and a circle are
# symmetric, $\delta = 0$; our upward triangle has its centroid two thirds of the way
# from apex to base, $\delta = 1/6$. So a region is a triangle when $\delta > 1/12$,
# halfway between. Otherwise it is a square when it fills more than halfway between a
# circle's $\rho = \pi/4$ and a square's $\rho = 1$, and a circle if not. Testing
# $\delta$ first matters for blurry images: blur rounds a small triangle's corners
# until its fill ratio looks like a circle's, but its mass stays low.
#
# **Size** is small when the larger side of the box, $\max(w, h)$, is under
# $(d_\text{small} + d_\text{large})/2$, and **position** is the cell whose centre is
# nearest to the centre of the box.

def describe_region(code: int, pixels: list[tuple[int, int]], S: int) -> dict:
    rows = np.array([p[0] for p in pixels])
    cols = np.array([p[1] for p in pixels])
    top, left = rows.min(), cols.min()
    h, w = rows.max() - top + 1, cols.max() - left + 1
    rho = len(pixels) / (w * h)
    delta = (rows.mean() + 0.5 - (top + h / 2)) / h
    if delta > 1 / 12:
        shape = "triangle"
    else:
        shape = "square" if rho > (1 + math.pi / 4) / 2 else "circle"
    d = diameters(S)
    size = "large" if max(w, h) >= (d["small"] + d["large"]) / 2 else "small"
    c_x, c_y = left + w / 2, top + h / 2
    centres = cell_centres(S)
    position = min(POSITIONS, key=lambda p: (centres[p][0] - c_x) ** 2 + (centres[p][1] - c_y) ** 2)
    return {"shape": shape, "colour": CODE_TO_COLOUR[code], "size": size, "position": position}


# The result is sorted like `Shapes.attributes` (by position, then larger first).

def read_shapes(image: torch.Tensor) -> list[dict]:
    r"""The shapes in an RGB image (3, S, S) in $[-1, 1]$, as a list of
    {shape, colour, size, position}, in `POSITIONS` order."""
    x = image.detach().to("cpu", torch.float32)
    if x.ndim != 3 or x.shape[0] != 3 or x.shape[1] != x.shape[2]:
        raise ValueError(f"read_shapes expects one square RGB image (3, S, S), not {tuple(x.shape)}")
    S = x.shape[-1]
    min_area = max(2, diameters(S)["small"] ** 2 / 8)
    found = [(describe_region(k, pixels, S), len(pixels))
             for k, pixels in connected_regions(colour_codes(x)) if len(pixels) >= min_area]
    found.sort(key=lambda f: (POSITIONS.index(f[0]["position"]), -f[1]))
    return [f[0] for f in found]


# # Digits
#
# A stand-in for MNIST: ten classes of white digits on black, $28 \times 28$ by default.
# We draw the digit with the font bundled inside Pillow
# (`ImageFont.load_default(size=...)`, the Aileron typeface, rendered by FreeType — no
# system fonts needed), on a canvas four times larger than the result, with a random
# stroke width to vary the weight of the pen. Then a random affine map bends it the way
# hands do. For a point $p$ measured from the centre of the canvas,
#
# $$
# p' = s \, R(\theta) \begin{pmatrix} 1 & k \\ 0 & 1 \end{pmatrix} p + t ,
# $$
#
# with rotation $\theta \in [-15°, 15°]$, scale $s \in [0.85, 1.15]$, shear
# $k \in [-0.3, 0.3]$ and shift $t$ up to 8% of the side in each direction. Pillow's
# affine transform asks, for each output pixel $p'$, where to sample the input: the
# inverse map $p = A^{-1}(p' - t)$ with $A = s R(\theta) \, \mathrm{Sh}(k)$. Averaging
# each $4 \times 4$ block of the large canvas gives the soft, antialiased strokes of
# scanned handwriting.

SUPERSAMPLE = 4


@lru_cache(maxsize=8)
def bundled_font(size: int) -> ImageFont.FreeTypeFont:
    if not features.check("freetype2"):
        raise RuntimeError("Digits needs Pillow built with FreeType (pip install pillow)")
    return ImageFont.load_default(size=size)


def render_digit(digit: int, size: int, rng: np.random.Generator) -> np.ndarray:
    L = size * SUPERSAMPLE
    font = bundled_font(round(0.75 * L))
    stroke = int(rng.integers(0, L // 28 + 1))
    canvas = Image.new("L", (L, L), 0)
    draw = ImageDraw.Draw(canvas)
    text = str(digit)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font, stroke_width=stroke)
    draw.text(((L - left - right) / 2, (L - top - bottom) / 2), text, fill=255, font=font,
              stroke_width=stroke, stroke_fill=255)

    theta = math.radians(rng.uniform(-15, 15))
    s = rng.uniform(0.85, 1.15)
    k = rng.uniform(-0.3, 0.3)
    t = rng.uniform(-0.08, 0.08, size=2) * L
    R = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    A = s * R @ np.array([[1.0, k], [0.0, 1.0]])
    # input = c + A^{-1}(output - c - t), written as Pillow's (a, b, c, d, e, f)
    A_inv = np.linalg.inv(A)
    c = np.array([L / 2, L / 2])
    offset = c - A_inv @ (c + t)
    coeffs = (A_inv[0, 0], A_inv[0, 1], offset[0], A_inv[1, 0], A_inv[1, 1], offset[1])
    canvas = canvas.transform((L, L), Image.Transform.AFFINE, coeffs,
                              resample=Image.Resampling.BILINEAR)
    return np.asarray(canvas.reduce(SUPERSAMPLE), dtype=np.uint8)


class Digits(Dataset):
    r"""`n` grayscale digits of side `size`; the label is the digit, drawn uniformly;
    item $i$ depends only on `(seed, i)`."""

    channels = 1
    num_classes = 10
    class_names = [str(d) for d in range(10)]

    def __init__(self, n: int = 10_000, size: int = 28, seed: int = 0):
        if size < 8:
            raise ValueError(f"Digits needs images of at least 8 pixels, not {size}")
        if n < 0 or seed < 0:
            raise ValueError("n and seed must not be negative")
        self.n, self.size, self.seed = int(n), int(size), int(seed)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        rng = item_rng(self.seed, check_index(i, self.n))
        digit = int(rng.integers(10))
        return make_item(to_tensor(render_digit(digit, self.size, rng)), digit,
                         f"the digit {digit}")


# # Your own images
#
# `ImageFolder` reads every file below a folder, at any depth (hidden files and folders,
# whose names start with a dot, are left alone). Images in the top-level subfolders
# `root/cats/...`, `root/dogs/...` get the label of that subfolder, in alphabetical
# order; images directly in `root` get $-1$.
#
# Each image is cut to its central square and resized. For a $W \times H$ image the
# square has side $m = \min(W, H)$ and its top-left corner at
#
# $$
# \Big( \big\lfloor \tfrac{W - m}{2} \big\rfloor, \; \big\lfloor \tfrac{H - m}{2} \big\rfloor \Big).
# $$
#
# We crop first and resize the crop (bicubic, which Pillow widens into a proper
# low-pass filter when shrinking), so no pixel outside the square can leak into the
# result. Photos are turned upright by their EXIF orientation first, and transparent
# pixels show what is under them.
#
# Every file is decoded once, when the dataset is built. A file that is not an image,
# or is truncated or corrupt, is skipped with one warning naming it — so a stray
# `notes.txt` does not end a training run, and a truncated download does not crash
# it an hour later. The resized pixels are kept in memory (3 kB per image at
# $32 \times 32$); pass `in_memory=False` for large folders at large sizes, and items
# are decoded again when read.


def load_square(path: Path, size: int) -> np.ndarray:
    """The central square of the image at `path`, resized to size x size, as uint8 RGB."""
    with Image.open(path) as im:
        im.load()
        im = ImageOps.exif_transpose(im)
        if im.mode != "RGB":
            im = im.convert("RGBA" if "transparency" in im.info or "A" in im.mode else "RGB")
            im = im.convert("RGB")
        W, H = im.size
        m = min(W, H)
        left, top = (W - m) // 2, (H - m) // 2
        im = im.crop((left, top, left + m, top + m))
        if im.size != (size, size):
            im = im.resize((size, size), Image.Resampling.BICUBIC)
        return np.asarray(im, dtype=np.uint8).copy()


class ImageFolder(Dataset):
    r"""The images below `root`, centre-cropped and resized to `size`, in RGB.
    `limit` keeps that many files, evenly spread over the sorted list."""

    channels = 3

    def __init__(self, root: str | Path, size: int = 32, *, limit: int | None = None,
                 in_memory: bool = True):
        self.root, self.size = Path(root), int(size)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: no such folder")
        files = sorted(p for p in self.root.rglob("*") if p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(self.root).parts))
        if limit is not None and limit < len(files):
            files = [files[j] for j in np.linspace(0, len(files) - 1, limit).round().astype(int)]
        self.paths: list[Path] = []
        self.pixels: list[np.ndarray] | None = [] if in_memory else None
        for path in files:
            try:
                pixels = load_square(path, self.size)
            except Exception as e:  # any failure to decode means: not an image we can use
                warnings.warn(f"{path}: skipped, not a readable image ({type(e).__name__}: {e})",
                              stacklevel=2)
                continue
            self.paths.append(path)
            if self.pixels is not None:
                self.pixels.append(pixels)
        if not self.paths:
            raise ValueError(f"{self.root}: no readable images")

        tops = [p.relative_to(self.root).parts for p in self.paths]
        tops = [parts[0] if len(parts) > 1 else None for parts in tops]
        self.class_names = sorted({t for t in tops if t is not None})
        self.num_classes = len(self.class_names)
        self.labels = [self.class_names.index(t) if t is not None else -1 for t in tops]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        i = check_index(i, len(self.paths))
        pixels = self.pixels[i] if self.pixels is not None else load_square(self.paths[i], self.size)
        label = self.labels[i]
        caption = self.class_names[label].replace("_", " ") if label >= 0 else ""
        return make_item(to_tensor(pixels), label, caption)


# # Choosing a dataset by name
#
# Chapters take their data from one flag: `--data shapes`, `--data digits` or
# `--data PATH` (a folder; write `./shapes` for a folder that happens to be called
# `shapes`). `--image-size` and `--data-size` override the dataset's own side and
# number of images; `--data-seed` picks another set of generated images.

GENERATED = {"shapes": Shapes, "digits": Digits}


def make_dataset(spec: str, size: int | None = None, n: int | None = None,
                 seed: int = 0) -> Dataset:
    kwargs = {} if size is None else {"size": size}
    if spec in GENERATED:
        if n is not None:
            kwargs["n"] = n
        return GENERATED[spec](seed=seed, **kwargs)
    if Path(spec).expanduser().is_dir():
        return ImageFolder(Path(spec).expanduser(), limit=n, **kwargs)
    raise ValueError(f"--data {spec!r}: expected 'shapes', 'digits' or a folder of images")


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


def add_data_args(parser: argparse.ArgumentParser, default: str = "shapes"):
    g = parser.add_argument_group("data")
    g.add_argument("--data", default=default,
                   help="shapes | digits | PATH to a folder of images (default: %(default)s)")
    g.add_argument("--image-size", type=positive_int, default=None,
                   help="side of the square images (default: shapes 32, digits 28, folders 32)")
    g.add_argument("--data-size", type=positive_int, default=None,
                   help="number of images (default: 10000 generated, or the whole folder)")
    g.add_argument("--data-seed", type=int, default=0,
                   help="seed of the generated training images; held-out images use seed + 1 and + 2 (default: %(default)s)")
    return parser


def dataset_from_args(args: argparse.Namespace) -> Dataset:
    return make_dataset(args.data, size=args.image_size, n=args.data_size,
                        seed=getattr(args, "data_seed", 0))


# ## Look at the data
#
# `python -m annogen.data --data shapes` prints the first captions and writes a grid of
# the first images to `data.png`: always look at a dataset before training on it.

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m annogen.data", description="Print captions and save a grid of the first images.")
    add_data_args(p)
    p.add_argument("--show", type=positive_int, default=16, help="images to show")
    p.add_argument("--out", default="data.png", help="grid image to write")
    args = p.parse_args(argv)
    try:
        ds = dataset_from_args(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    items = [ds[i] for i in range(min(args.show, len(ds)))]
    for j, it in enumerate(items):
        print(f"{j:3d}  label {int(it['label']):3d}  {it['caption']}")
    cols = min(8, len(items))
    rows = math.ceil(len(items) / cols)
    S = ds.size
    grid = np.zeros((rows * (S + 2), cols * (S + 2), 3), dtype=np.uint8)
    for j, it in enumerate(items):
        x = ((it["image"].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        x = x.expand(3, -1, -1).permute(1, 2, 0).numpy()
        r, c = divmod(j, cols)
        grid[r * (S + 2) + 1:r * (S + 2) + 1 + S, c * (S + 2) + 1:c * (S + 2) + 1 + S] = x
    Image.fromarray(grid).save(args.out)
    print(f"{len(ds)} images of {ds.channels}x{S}x{S}, {ds.num_classes} classes; grid in {args.out}")
    if isinstance(ds, Shapes):  # the property the course's scores rest on
        ok = sum(read_shapes(it["image"]) == ds.attributes(j) for j, it in enumerate(items))
        print(f"checked: the checker reads every attribute back from the pixels of {ok} of "
              f"{len(items)} images")
        if ok != len(items):
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
