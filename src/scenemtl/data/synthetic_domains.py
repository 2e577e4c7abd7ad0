"""Synthetic domains: a many-domain image-classification set drawn procedurally, no download needed.

A stand-in for the Visual Decathlon (:mod:`scenemtl.data.decathlon`) in tests, demos and CPU
benchmarks: ten domains, one ``classification`` task each (named by the domain), 72×72 RGB images,
and the decathlon's sample contract: ``image`` uint8 ``[3, 72, 72]``, the sample's domain task its
class id (int64 scalar), every other requested domain task −1 (unlabelled), ``meta`` = ``id``,
``size``, ``labelled`` (``[domain]``) and ``domain``, plus ``flip`` False for the domains whose
answer a left–right mirror changes (as the decathlon's text, digit and sign domains). ``groups()``
gives each domain's indices for ``data.batching: grouped``.

The domains share their low-level vocabulary — the same anti-aliased OpenCV polygons, strokes and
outlines, plain, gradient and noisy backgrounds — so a shared trunk has common edges, corners and
blobs to learn, but differ in style (colour or grey, light or dark, clean or noisy, filled or
outlined) and in what is asked (which shape, how many, which direction, which colour, where, which
glyph), so per-domain attention or heads have something to select. Class counts differ (2 to 20)
and so does difficulty: ``shapes``, ``colours``, ``texture`` are easy, ``counting``, ``presence``,
``relation``, ``outlines`` and ``glyphs`` (20 classes of about 30 images each at the defaults) are
harder. In order (the first ``domains`` are used):

==============  =======  ===============================================================================
domain          classes  the question, and the style
==============  =======  ===============================================================================
shapes          6        which shape (circle, triangle, square, star, cross, hexagon): one filled
                         shape of a dark colour on a light plain background
texture         10       which periodic pattern (stripes of four orientations, checks, grid, dots,
                         rings, waves, blobs), two random colours filling the image, mild noise
digits          10       which seven-segment digit is in the middle (slanted strokes, neighbours cut
                         by the border as in house numbers), light on dark, noisy
presence        2        is there a circle among 4–7 small grey shapes (triangles, squares, stars,
                         crosses) on a noisy grey background
counting        8        how many small shapes (1–8) on a light background
orientation     8        which of eight directions an arrow points, on a two-colour gradient
colours         8        the hue of the large shape (red, orange, yellow, green, cyan, blue, purple,
                         pink) beside two grey distractors on a grey background
outlines        6        ``shapes``' question on thin light outlines over a dark, noisy, cluttered
                         background (inverted contrast)
relation        4        is the filled shape left of, right of, above or below the outlined one
glyphs          20       which of 20 stroke glyphs (fixed per ``seed``, as characters of an alphabet),
                         drawn by hand: jittered strokes, rotation, shear, dark ink on paper
==============  =======  ===============================================================================

Sample ``i`` of a split is a pure function of ``(seed, split, i)`` (and the domain list): the domain
and its local index ``j`` pick the random stream ``(seed, split, domain number, j)``; train and val
draw from disjoint streams. The class of local index ``j`` is ``j mod classes`` (the classes are
balanced to within one image). A 72×72 sample takes about 0.1–0.4 ms to draw on one core; drawn images are kept
in memory (``cache``).

Options: ``domains`` (2–10, the first that many of the table; a task list picks among them),
``num_train`` and ``num_val`` (images per domain and split), ``seed``, ``cache``.
"""

from __future__ import annotations

import colorsys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

from scenemtl.data.base import DatasetInfo, DenseDataset, image_to_tensor, register_dataset
from scenemtl.errors import ConfigError

#: image height and width (pixels)
SIZE = 72
SHAPES = ("circle", "triangle", "square", "star", "cross", "hexagon")
HUES = {"red": 0, "orange": 30, "yellow": 58, "green": 120, "cyan": 180, "blue": 235, "purple": 275, "pink": 320}
TEXTURES = ("horizontal", "vertical", "diagonal /", "diagonal \\", "checks", "grid", "dots", "rings", "waves", "blobs")
DIRECTIONS = ("east", "north-east", "north", "north-west", "west", "south-west", "south", "south-east")
RELATIONS = ("left", "right", "above", "below")
#: the seven segments (a top, b top right, c bottom right, d bottom, e bottom left, f top left, g middle)
SEGMENTS = {
    "a": ((0, 0), (1, 0)),
    "b": ((1, 0), (1, 0.5)),
    "c": ((1, 0.5), (1, 1)),
    "d": ((0, 1), (1, 1)),
    "e": ((0, 0.5), (0, 1)),
    "f": ((0, 0), (0, 0.5)),
    "g": ((0, 0.5), (1, 0.5)),
}
DIGIT_SEGMENTS = ("abcdef", "bc", "abged", "abgcd", "fgbc", "afgcd", "afgedc", "abc", "abcdefg", "abfgcd")
GLYPHS = 20
_SPLIT_CODES = {"train": 0, "val": 1}
_SHIFT = 4  # OpenCV's fractional bits for sub-pixel drawing
_YY, _XX = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)

Colour = tuple[int, int, int]


def _colour(values: Any) -> Colour:
    r, g, b = (int(v) for v in values)
    return (r, g, b)


def _fixed(points: np.ndarray) -> np.ndarray:
    """Float pixel coordinates (x, y) as OpenCV's fixed-point integers (``_SHIFT`` fractional bits)."""
    return np.round(np.asarray(points, dtype=np.float64) * (1 << _SHIFT)).astype(np.int32)


def shape_points(kind: str, cx: float, cy: float, radius: float, angle: float) -> np.ndarray:
    """The outline of ``kind`` (one of ``SHAPES``) of circumradius ``radius`` turned by ``angle``, ``[N, 2]`` (x, y)."""
    if kind == "circle":
        t = np.linspace(0, 2 * np.pi, 28, endpoint=False)
        r = np.full_like(t, 0.9)
    elif kind in ("triangle", "square", "hexagon"):
        n = {"triangle": 3, "square": 4, "hexagon": 6}[kind]
        t = np.arange(n) * 2 * np.pi / n
        r = np.ones(n)
    elif kind == "star":
        t = np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
    elif kind == "cross":
        w = 0.33
        xy = np.array([(w, 1), (w, w), (1, w), (1, -w), (w, -w), (w, -1), (-w, -1), (-w, -w), (-1, -w), (-1, w), (-w, w), (-w, 1)])
        t, r = np.arctan2(xy[:, 1], xy[:, 0]), np.hypot(xy[:, 0], xy[:, 1]) / np.sqrt(1 + w * w)
    else:
        raise ValueError(f"unknown shape {kind!r}")
    t = t + angle
    return np.stack([cx + radius * r * np.cos(t), cy + radius * r * np.sin(t)], axis=1)


def draw_shape(
    image: np.ndarray, kind: str, cx: float, cy: float, radius: float, angle: float, colour: Colour, thickness: int = -1
) -> None:
    """Draw a filled (``thickness`` −1) or outlined shape, anti-aliased, in place."""
    points = _fixed(shape_points(kind, cx, cy, radius, angle))
    if thickness < 0:
        cv2.fillPoly(image, [points], colour, cv2.LINE_AA, _SHIFT)
    else:
        cv2.polylines(image, [points], True, colour, thickness, cv2.LINE_AA, _SHIFT)


def _line(image: np.ndarray, p: Any, q: Any, colour: Colour, thickness: int) -> None:
    a, b = _fixed(p), _fixed(q)
    cv2.line(image, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), colour, thickness, cv2.LINE_AA, _SHIFT)


def _plain(colour: Any) -> np.ndarray:
    return np.full((SIZE, SIZE, 3), _colour(colour), dtype=np.uint8)


def _noisy(rng: np.random.Generator, image: np.ndarray, sigma: float, grey: bool = False) -> np.ndarray:
    """``image`` plus Gaussian noise of ``sigma`` grey levels (one value for the three channels with ``grey``)."""
    shape = (SIZE, SIZE, 1) if grey else (SIZE, SIZE, 3)
    noise = rng.standard_normal(shape, dtype=np.float32) * sigma
    return np.clip(image.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def _blend(t: np.ndarray, low: Any, high: Any) -> np.ndarray:
    """Per pixel ``low + t · (high − low)`` for ``t`` in [0, 1] ``[H, W]``: an RGB image."""
    low, high = np.asarray(low, np.float32), np.asarray(high, np.float32)
    return (low + t[..., None] * (high - low)).astype(np.uint8)


def _far(rng: np.random.Generator, level: float, low: int = 0, high: int = 255, gap: int = 70) -> int:
    """A grey level in [low, high] at least ``gap`` away from ``level`` (contrast)."""
    choices = [v for v in range(low, high + 1, 5) if abs(v - level) >= gap]
    return int(rng.choice(choices))


def _cells(rng: np.random.Generator, count: int, radius: float, grid: int = 4) -> list[tuple[float, float]]:
    """``count`` centres in distinct cells of a ``grid``×``grid`` lattice, jittered within the cell so that
    shapes of ``radius`` never overlap."""
    cell = SIZE / grid
    room = max(0.0, cell / 2 - radius - 1)
    picks = rng.choice(grid * grid, size=count, replace=False)
    return [
        ((k % grid + 0.5) * cell + rng.uniform(-room, room), (k // grid + 0.5) * cell + rng.uniform(-room, room)) for k in picks.tolist()
    ]


# -- the domains -------------------------------------------------------------------------------------


def _shapes(rng: np.random.Generator, label: int) -> np.ndarray:
    image = _plain(rng.integers(160, 256, 3))
    radius = rng.uniform(12, 24)
    cx, cy = rng.uniform(radius + 2, SIZE - radius - 2, 2)
    draw_shape(image, SHAPES[label], cx, cy, radius, rng.uniform(0, 2 * np.pi), _colour(rng.integers(0, 110, 3)))
    return image


def _outlines(rng: np.random.Generator, label: int) -> np.ndarray:
    image = _plain(rng.integers(0, 60, 3))
    for _ in range(3):  # faint clutter lines
        _line(image, rng.uniform(0, SIZE, 2), rng.uniform(0, SIZE, 2), _colour(rng.integers(50, 110, 3)), 1)
    radius = rng.uniform(11, 24)
    cx, cy = rng.uniform(radius + 2, SIZE - radius - 2, 2)
    thickness = int(rng.integers(1, 3))
    draw_shape(image, SHAPES[label], cx, cy, radius, rng.uniform(0, 2 * np.pi), _colour(rng.integers(150, 256, 3)), thickness)
    return _noisy(rng, image, 14)


def _presence(rng: np.random.Generator, label: int) -> np.ndarray:
    level = rng.uniform(90, 170)
    image = _plain((level, level, level))
    count = int(rng.integers(4, 8))
    radius = rng.uniform(5.5, 8.5)
    kinds = [str(k) for k in rng.choice(["triangle", "square", "star", "cross"], size=count)]
    if label:
        kinds[int(rng.integers(count))] = "circle"
    for kind, (cx, cy) in zip(kinds, _cells(rng, count, radius)):
        grey = _far(rng, level, gap=45)
        draw_shape(image, kind, cx, cy, radius * rng.uniform(0.85, 1.15), rng.uniform(0, 2 * np.pi), (grey, grey, grey))
    return _noisy(rng, image, 12, grey=True)


def _counting(rng: np.random.Generator, label: int) -> np.ndarray:
    image = _plain(rng.integers(170, 256, 3))
    for cx, cy in _cells(rng, label + 1, 7.0):
        kind = SHAPES[int(rng.integers(len(SHAPES)))]
        draw_shape(image, kind, cx, cy, rng.uniform(4.5, 7.0), rng.uniform(0, 2 * np.pi), _colour(rng.integers(0, 120, 3)))
    return image


def _orientation(rng: np.random.Generator, label: int) -> np.ndarray:
    t = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(t) * (_XX - SIZE / 2) + np.sin(t) * (_YY - SIZE / 2)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    dark = rng.uniform() < 0.5
    low, high = (rng.integers(120, 256, 3), rng.integers(120, 256, 3)) if dark else (rng.integers(0, 110, 3), rng.integers(0, 110, 3))
    image = np.ascontiguousarray(_blend(ramp, low, high))
    angle = np.deg2rad(label * 45 + rng.uniform(-12, 12))
    length = rng.uniform(36, 54)
    centre = SIZE / 2 + rng.uniform(-6, 6, 2)
    step = np.array([np.cos(angle), -np.sin(angle)]) * length / 2  # y points down: north is −y
    tail, tip = _fixed(centre - step), _fixed(centre + step)
    colour = _colour(rng.integers(0, 70, 3) if dark else rng.integers(185, 256, 3))
    cv2.arrowedLine(
        image, (int(tail[0]), int(tail[1])), (int(tip[0]), int(tip[1])), colour, int(rng.integers(2, 5)), cv2.LINE_AA, _SHIFT, 0.35
    )
    return image


def _texture(rng: np.random.Generator, label: int) -> np.ndarray:
    period = rng.uniform(7, 14)
    phase = rng.uniform(0, 2 * np.pi)
    tilt = np.deg2rad(rng.uniform(-8, 8))
    x = np.cos(tilt) * _XX - np.sin(tilt) * _YY
    y = np.sin(tilt) * _XX + np.cos(tilt) * _YY
    w = 2 * np.pi / period
    kind = TEXTURES[label]
    if kind == "horizontal":
        t = np.cos(w * y + phase)
    elif kind == "vertical":
        t = np.cos(w * x + phase)
    elif kind == "diagonal /":
        t = np.cos(w * (x + y) / np.sqrt(2) + phase)
    elif kind == "diagonal \\":
        t = np.cos(w * (x - y) / np.sqrt(2) + phase)
    elif kind == "checks":
        t = np.sign(np.cos(w * x + phase) * np.cos(w * y + phase))
    elif kind == "grid":
        t = np.maximum(np.cos(w * x + phase), np.cos(w * y + phase)) ** 9
    elif kind == "dots":
        t = (np.cos(w * x + phase) + np.cos(w * y + phase) > 1.0).astype(np.float32)
    elif kind == "rings":
        cx, cy = rng.uniform(0, SIZE, 2)
        t = np.cos(w * np.hypot(_XX - cx, _YY - cy) + phase)
    elif kind == "waves":
        t = np.cos(w * (y + rng.uniform(3, 6) * np.sin(2 * np.pi * x / rng.uniform(24, 40))) + phase)
    else:  # blobs: smooth noise
        coarse = rng.standard_normal((6, 6)).astype(np.float32)
        t = cv2.resize(coarse, (SIZE, SIZE), interpolation=cv2.INTER_CUBIC)
    t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
    return _noisy(rng, _blend(t.astype(np.float32), rng.integers(0, 256, 3), rng.integers(0, 256, 3)), 8)


def _digit(image: np.ndarray, digit: int, cx: float, cy: float, width: float, slant: float, colour: Colour, thickness: int) -> None:
    height = 1.9 * width
    for segment in DIGIT_SEGMENTS[digit]:
        ends = [(cx + (u - 0.5) * width - slant * (v - 0.5) * height, cy + (v - 0.5) * height) for u, v in SEGMENTS[segment]]
        _line(image, ends[0], ends[1], colour, thickness)


def _digits(rng: np.random.Generator, label: int) -> np.ndarray:
    background = rng.integers(0, 120, 3)
    image = _plain(background)
    colour = _colour(np.clip(background + rng.integers(90, 160, 3), 0, 255))
    width = rng.uniform(15, 21)
    slant = rng.uniform(0, 0.25)
    thickness = int(rng.integers(3, 6))
    cx, cy = SIZE / 2 + rng.uniform(-4, 4), SIZE / 2 + rng.uniform(-5, 5)
    gap = width + rng.uniform(8, 12)
    for offset, digit in ((-gap, int(rng.integers(10))), (0.0, label), (gap, int(rng.integers(10)))):
        _digit(image, digit, cx + offset, cy, width, slant, colour, thickness)
    return _noisy(rng, cv2.GaussianBlur(image, (3, 3), 0), 10)


def _colours(rng: np.random.Generator, label: int) -> np.ndarray:
    level = rng.uniform(70, 190)
    image = _plain((level, level, level))
    for cx, cy in _cells(rng, 2, 7, grid=3):  # grey distractors, drawn under the coloured shape
        grey = _far(rng, level, gap=40)
        draw_shape(image, SHAPES[int(rng.integers(len(SHAPES)))], cx, cy, 8, rng.uniform(0, 2 * np.pi), (grey, grey, grey))
    hue = (list(HUES.values())[label] + rng.uniform(-8, 8)) % 360
    rgb = colorsys.hsv_to_rgb(hue / 360, rng.uniform(0.65, 1.0), rng.uniform(0.7, 1.0))
    radius = rng.uniform(11, 19)
    cx, cy = rng.uniform(radius + 2, SIZE - radius - 2, 2)
    draw_shape(image, SHAPES[int(rng.integers(len(SHAPES)))], cx, cy, radius, rng.uniform(0, 2 * np.pi), _colour(np.array(rgb) * 255))
    return image


def _relation(rng: np.random.Generator, label: int) -> np.ndarray:
    image = _plain(rng.integers(150, 256, 3))
    radius = rng.uniform(6, 10)
    distance = rng.uniform(22, 40)
    across = rng.uniform(-0.4, 0.4) * distance
    axis = {"left": (-1, 0), "right": (1, 0), "above": (0, -1), "below": (0, 1)}[RELATIONS[label]]
    shift = np.array(axis, dtype=np.float64) * distance + np.array(axis[::-1], dtype=np.float64) * across
    low, high = radius + 2 + np.abs(shift) / 2, SIZE - radius - 2 - np.abs(shift) / 2
    middle = rng.uniform(low, np.maximum(low, high))
    colour = _colour(rng.integers(0, 110, 3))
    kinds = rng.choice(len(SHAPES), size=2)
    reference, target = middle - shift / 2, middle + shift / 2
    draw_shape(image, SHAPES[int(kinds[0])], reference[0], reference[1], radius, rng.uniform(0, 2 * np.pi), colour, 2)
    draw_shape(image, SHAPES[int(kinds[1])], target[0], target[1], radius, rng.uniform(0, 2 * np.pi), colour)
    return _noisy(rng, image, 6)


def glyph_strokes(seed: int) -> list[list[np.ndarray]]:
    """The ``GLYPHS`` glyphs of ``seed``: each 2–4 strokes, a stroke a polyline of 2–4 points in [0.1, 0.9]²."""
    glyphs = []
    for k in range(GLYPHS):
        rng = np.random.default_rng([seed, 7919, k])
        glyphs.append([rng.uniform(0.1, 0.9, (int(rng.integers(2, 5)), 2)) for _ in range(int(rng.integers(2, 5)))])
    return glyphs


def _glyph(rng: np.random.Generator, strokes: list[np.ndarray]) -> np.ndarray:
    paper = rng.uniform(215, 255)
    image = _plain((paper, paper, paper))
    scale = rng.uniform(40, 54)
    angle = np.deg2rad(rng.uniform(-15, 15))
    shear = rng.uniform(-0.15, 0.15)
    c, s = np.cos(angle), np.sin(angle)
    matrix = scale * np.array([[c, -s], [s, c]]) @ np.array([[1, shear], [0, 1]])
    centre = SIZE / 2 + rng.uniform(-5, 5, 2)
    ink = _far(rng, paper, 0, 90, gap=120)
    thickness = int(rng.integers(2, 5))
    for stroke in strokes:
        points = (stroke - 0.5 + rng.uniform(-0.035, 0.035, stroke.shape)) @ matrix.T + centre
        cv2.polylines(image, [_fixed(points)], False, (ink, ink, ink), thickness, cv2.LINE_AA, _SHIFT)
    return _noisy(rng, image, 6, grey=True)


@dataclass(frozen=True)
class Domain:
    """One domain: its class names, whether a left–right mirror keeps the answer, and its drawing."""

    name: str
    classes: tuple[str, ...]
    flip: bool
    draw: Callable[[np.random.Generator, int], np.ndarray] | None  # None: drawn by the dataset (glyphs need the seed)


#: the domains in order (``domains: N`` takes the first N)
DOMAINS: tuple[Domain, ...] = (
    Domain("shapes", SHAPES, True, _shapes),
    Domain("texture", TEXTURES, False, _texture),
    Domain("digits", tuple(str(d) for d in range(10)), False, _digits),
    Domain("presence", ("no circle", "circle"), True, _presence),
    Domain("counting", tuple(str(n) for n in range(1, 9)), True, _counting),
    Domain("orientation", DIRECTIONS, False, _orientation),
    Domain("colours", tuple(HUES), True, _colours),
    Domain("outlines", SHAPES, True, _outlines),
    Domain("relation", RELATIONS, False, _relation),
    Domain("glyphs", tuple(f"glyph {k}" for k in range(GLYPHS)), False, None),
)
DOMAIN_NAMES = tuple(domain.name for domain in DOMAINS)
_BY_NAME = {domain.name: domain for domain in DOMAINS}


def _palette(count: int) -> np.ndarray:
    return np.random.default_rng(count).integers(0, 256, size=(count, 3), dtype=np.uint8)


@register_dataset("synthetic_domains")
class SyntheticDomains(DenseDataset):
    """Ten procedurally drawn image-classification domains, one ``classification`` task each (see the module docstring)."""

    info = DatasetInfo(
        name="synthetic_domains",
        tasks=DOMAIN_NAMES,
        class_names={domain.name: list(domain.classes) for domain in DOMAINS},
        palettes={domain.name: _palette(len(domain.classes)) for domain in DOMAINS},
        # of the ten domains' training images at the defaults, rounded
        mean=(0.56, 0.56, 0.57),
        std=(0.29, 0.29, 0.29),
        task_types={name: "classification" for name in DOMAIN_NAMES},
    )

    def __init__(
        self,
        root: str | None = None,
        split: str = "train",
        tasks: list[str] | None = None,
        domains: int = len(DOMAINS),
        num_train: int = 600,
        num_val: int = 200,
        seed: int = 0,
        cache: bool = True,
    ) -> None:
        if isinstance(domains, bool) or not isinstance(domains, int) or not 2 <= domains <= len(DOMAINS):
            raise ConfigError(f"data.options.domains: synthetic_domains has 2 to {len(DOMAINS)} domains, got {domains!r}")
        for key, value in (("num_train", num_train), ("num_val", num_val)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"data.options.{key}: images per domain must be a positive integer, got {value!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"data.options.seed must be a non-negative integer, got {seed!r}")
        available = DOMAIN_NAMES[:domains]
        super().__init__(root, split, list(tasks) if tasks is not None else list(available))
        beyond = [t for t in self.tasks if t not in available]
        if beyond:
            raise ConfigError(
                f"task(s) {beyond} are not among the first {domains} domains of synthetic_domains ({', '.join(available)}); "
                f"raise data.options.domains or leave them out of tasks"
            )
        #: the domains with images, in the table's order
        self.domains = [name for name in available if name in self.tasks]
        self.per_domain = num_train if split == "train" else num_val
        self.seed = seed
        self.glyphs = glyph_strokes(seed)
        self._cache: dict[int, np.ndarray] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.domains) * self.per_domain

    def groups(self) -> list[list[int]]:
        """The indices of each domain, in the table's order (``data.batching: grouped``)."""
        return [list(range(k * self.per_domain, (k + 1) * self.per_domain)) for k in range(len(self.domains))]

    def locate(self, index: int) -> tuple[str, int, int]:
        """Sample ``index``'s domain, its index within the domain, and its class."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} synthetic_domains {self.split} images")
        domain, local = self.domains[index // self.per_domain], index % self.per_domain
        return domain, local, local % len(_BY_NAME[domain].classes)

    def sample_id(self, index: int) -> str:
        domain, local, _ = self.locate(index)
        return f"{domain}/{self.split}_{local:05d}"

    def draw(self, index: int) -> np.ndarray:
        """The 72×72×3 uint8 image of sample ``index`` (from the cache when there)."""
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        name, local, label = self.locate(index)
        rng = np.random.default_rng([self.seed, _SPLIT_CODES[self.split], DOMAIN_NAMES.index(name), local])
        domain = _BY_NAME[name]
        image = _glyph(rng, self.glyphs[label]) if domain.draw is None else domain.draw(rng, label)
        image = np.ascontiguousarray(image)
        if self._cache is not None:
            self._cache[index] = image
        return image

    def sample(self, index: int) -> dict[str, Any]:
        name, _, label = self.locate(index)
        image = self.draw(index)
        sample: dict[str, Any] = {"image": image_to_tensor(image)}
        for task in self.tasks:
            sample[task] = torch.tensor(label if task == name else -1, dtype=torch.int64)
        meta: dict[str, Any] = {"id": self.sample_id(index), "size": (SIZE, SIZE), "labelled": [name], "domain": name}
        if not _BY_NAME[name].flip:
            meta["flip"] = False
        sample["meta"] = meta
        return sample
