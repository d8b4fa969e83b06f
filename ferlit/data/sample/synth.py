"""Sample data: drawn faces in the real Aff-Wild2 and ExpW layouts, to try ferlit without either.

Aff-Wild2 and ExpW are licensed to individual researchers, so examples, tests and CI cannot ship
them. This module draws a stand-in with PIL that exercises the same code paths: the ABAW 2020
folder layout and annotation format, the quirks of the real files (``-1`` unannotated frames,
annotated frames without an image, ``_left``/``_right`` videos, several faces per ExpW image, a
duplicate ``label.lst`` line) and the paper's class imbalance. Each expression has its own bold
geometry (mouth curve and opening, brows, eyes) so that a small model learns it in minutes on a
CPU, while identity, pose, lighting, noise and JPEG compression vary as they do in the wild.

Like real video, a sample video holds one person whose expression comes in runs of consecutive
frames with small frame-to-frame changes of pose and intensity, so temporal smoothing of
predictions helps here as it does on Aff-Wild2.

Everything is drawn from ``numpy.random.Generator`` streams seeded by ``(seed, part, item)`` and
saved at a fixed JPEG quality, so the same seed gives byte-identical files.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from rich.progress import Progress

from ferlit.data.index import SKIP_REASONS
from ferlit.data.readers.affwild2 import (
    FRAMES_DIR,
    annotation_dir,
    frame_file,
    write_annotation_file,
)
from ferlit.data.readers.expw import IMAGES_DIR, LABEL_FILE, ExpWFace, write_label_list
from ferlit.errors import ConfigError, DataError
from ferlit.expressions import EXPRESSIONS_7, EXPW_TO_ABAW
from ferlit.io import atomic_write

SAMPLE_VERSION = "sample-v1"
MANIFEST = "manifest.json"
LAYOUT = "abaw2020"

#: The paper's class weights count(Neutral) / count(c) on Aff-Wild2 train + ExpW (Cafarelli et
#: al. 2020); the sample data's class frequencies are proportional to their inverse: Neutral
#: 62%, Anger 2.7%, Disgust 1.6%, Fear 1.2%, Happiness 18%, Sadness 11%, Surprise 4.5%.
PAPER_CLASS_WEIGHTS = (1.0, 22.92, 37.5, 50.66, 3.47, 5.79, 13.55)
_INVERSE_WEIGHTS = 1 / np.asarray(PAPER_CLASS_WEIGHTS)
CLASS_FREQUENCIES = _INVERSE_WEIGHTS / _INVERSE_WEIGHTS.sum()

#: Sizes at scale 1.0: videos per split, frames per video, ExpW images.
TRAIN_VIDEOS, VAL_VIDEOS, VIDEO_FRAMES, EXPW_IMAGES = 24, 8, (120, 180), 300
#: Every class gets at least this many frames in each Aff-Wild2 split, so that all appear in val.
MIN_CLASS_FRAMES = 12
FACE_SIZE = 112  # Aff-Wild2 cropped_aligned faces are 112x112
SUPERSAMPLE = 2  # drawn at twice the size, then reduced: anti-aliased edges
AFFWILD2_JPEG_QUALITY = 90
EXPW_JPEG_QUALITY = 85
#: ExpW confidences are drawn on both sides of this, so ``min_confidence`` has faces to drop.
CONFIDENCE_THRESHOLD = 50.0

RGB = tuple[int, int, int]


class Geometry(NamedTuple):
    """An expression's face geometry, in units of the face's half-width.

    Brows: raise (up +), tilt (inner ends up +, down - as in anger), arch. Eyes: openness (1 is
    relaxed). Mouth: corner curve (up +), opening, width (1 is relaxed), sneer (one corner up),
    teeth shown (> 0.5), nose wrinkles (> 0.5).
    """

    brow_raise: float
    brow_tilt: float
    brow_arch: float
    eye_open: float
    mouth_curve: float
    mouth_open: float
    mouth_width: float
    sneer: float
    teeth: float
    wrinkle: float


#: Full-intensity geometry per ABAW class, after the action units of each basic emotion (Ekman
#: & Friesen's FACS prototypes), exaggerated to stay readable at 64x64.
GEOMETRY: tuple[Geometry, ...] = (
    Geometry(0.00, 0.00, 0.03, 1.00, 0.00, 0.00, 1.00, 0.00, 0.0, 0.0),  # Neutral
    Geometry(-0.12, -0.32, 0.00, 0.60, -0.08, 0.18, 0.90, 0.00, 1.0, 0.0),  # Anger
    Geometry(-0.08, -0.08, 0.00, 0.50, -0.04, 0.12, 0.85, 0.26, 0.0, 1.0),  # Disgust
    Geometry(0.16, 0.30, 0.00, 1.60, -0.12, 0.22, 1.40, 0.00, 1.0, 0.0),  # Fear
    Geometry(0.03, 0.00, 0.06, 0.60, 0.28, 0.24, 1.30, 0.00, 1.0, 0.0),  # Happiness
    Geometry(0.00, 0.32, 0.00, 0.70, -0.30, 0.00, 0.90, 0.00, 0.0, 0.0),  # Sadness
    Geometry(0.26, 0.00, 0.12, 1.60, 0.00, 0.50, 0.55, 0.00, 0.0, 0.0),  # Surprise
)

SKIN_TONES: tuple[RGB, ...] = (
    (255, 224, 196), (241, 194, 167), (236, 188, 150), (224, 172, 138),
    (198, 134, 96), (161, 102, 70), (118, 74, 50), (90, 56, 37),
)  # fmt: skip
HAIR_COLOURS: tuple[RGB, ...] = (
    (30, 25, 20), (70, 45, 30), (110, 75, 45), (200, 170, 110), (150, 70, 40), (165, 165, 160),
)  # fmt: skip


def _colour(rng: np.random.Generator, palette: tuple[RGB, ...], jitter: float = 10) -> RGB:
    base = np.asarray(palette[rng.integers(len(palette))], float)
    return tuple(int(v) for v in np.clip(base + rng.normal(0, jitter, 3), 0, 255))


def _random_colour(rng: np.random.Generator) -> RGB:
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def _shade(colour: RGB, factor: float) -> RGB:
    return tuple(int(min(255, c * factor)) for c in colour)


@dataclass(frozen=True)
class Identity:
    """One person: face shape, colours, feature placement and a resting expression offset."""

    face_w: float
    face_h: float
    skin: RGB
    hair: RGB
    hair_style: int  # 0 short, 1 long, 2 bald, 3 curly
    fringe: float  # how far the fringe comes down, as the sine of its chord angle
    lips: RGB
    iris: RGB
    clothes: RGB
    eye_gap: float
    eye_y: float
    mouth_y: float
    brow: float
    sneer_side: int
    glasses: bool
    beard: bool
    rest: tuple[float, ...]

    @classmethod
    def random(cls, rng: np.random.Generator) -> Identity:
        skin = _colour(rng, SKIN_TONES)
        rest = np.zeros(len(Geometry._fields))
        rest[[0, 1, 3, 4, 6]] = rng.normal(0, [0.03, 0.03, 0.08, 0.02, 0.06])
        return cls(
            face_w=rng.uniform(0.85, 1.08),
            face_h=rng.uniform(0.9, 1.12),
            skin=skin,
            hair=_colour(rng, HAIR_COLOURS),
            hair_style=int(rng.choice(4, p=[0.4, 0.3, 0.15, 0.15])),
            fringe=rng.uniform(0.72, 0.82),
            lips=_shade(skin, rng.uniform(0.45, 0.6)),
            iris=_colour(rng, ((60, 40, 25), (40, 80, 120), (70, 100, 60), (30, 30, 30)), 15),
            clothes=_random_colour(rng),
            eye_gap=rng.uniform(0.88, 1.1),
            eye_y=rng.normal(0, 0.03),
            mouth_y=rng.normal(0, 0.03),
            brow=rng.uniform(0.85, 1.2),
            sneer_side=int(rng.choice([-1, 1])),
            glasses=bool(rng.random() < 0.15),
            beard=bool(rng.random() < 0.12),
            rest=tuple(rest.tolist()),
        )

    def geometry(self, label: int, intensity: float, rng: np.random.Generator) -> Geometry:
        """The face of class ``label`` at ``intensity`` (0 neutral .. 1 full), with small
        frame-to-frame jitter (speech, blinks) on top of this person's resting face."""
        neutral = np.asarray(GEOMETRY[0])
        g = neutral + intensity * (np.asarray(GEOMETRY[label]) - neutral) + np.asarray(self.rest)
        g[:7] += rng.normal(0, 0.015, 7)
        g[5] = abs(g[5])
        return Geometry(*g.tolist())


class Pose(NamedTuple):
    """In-plane rotation (degrees), shift (fraction of the tile) and scale of a drawn face."""

    angle: float
    dx: float
    dy: float
    scale: float


def draw_face(person: Identity, g: Geometry, pose: Pose, size: int) -> Image.Image:
    """A head of ``person`` with geometry ``g`` on a transparent ``size`` x ``size`` RGBA tile.

    The framing follows Aff-Wild2's ``cropped_aligned`` faces: the face fills about 60% of the
    tile's width and 75% of its height, with hair, ears, neck and shoulders around it.
    """
    layer = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    cx, cy = size * (0.5 + pose.dx), size * (0.5 + pose.dy)
    rx = 0.34 * size * person.face_w * pose.scale
    ry = 0.42 * size * person.face_h * pose.scale
    u = rx

    def w(v: float) -> int:
        return max(1, round(v * u))

    face_box = (cx - rx, cy - ry, cx + rx, cy + ry)
    if person.hair_style == 1:
        d.rounded_rectangle(
            (cx - 1.25 * rx, cy - 1.1 * ry, cx + 1.25 * rx, cy + 1.0 * ry),
            radius=rx,
            fill=person.hair,
        )
    d.ellipse((cx - 2.0 * rx, cy + 1.15 * ry, cx + 2.0 * rx, cy + 2.8 * ry), fill=person.clothes)
    d.rectangle(
        (cx - 0.42 * rx, cy + 0.5 * ry, cx + 0.42 * rx, cy + 1.4 * ry),
        fill=_shade(person.skin, 0.85),
    )
    if person.hair_style == 0:
        d.ellipse((cx - 1.1 * rx, cy - 1.15 * ry, cx + 1.1 * rx, cy + 0.3 * ry), fill=person.hair)
    eye_y = cy - 0.15 * ry + person.eye_y * u
    for side in (-1, 1):
        ex = cx + side * 0.98 * rx
        d.ellipse(
            (ex - 0.12 * rx, eye_y - 0.05 * ry, ex + 0.12 * rx, eye_y + 0.35 * ry),
            fill=_shade(person.skin, 0.92),
        )
    d.ellipse(face_box, fill=person.skin)
    if person.beard:
        d.chord(face_box, start=25, end=155, fill=_blend(person.skin, person.hair, 0.3))
    if person.hair_style in (0, 1):
        theta = math.degrees(math.asin(person.fringe))
        d.chord(face_box, start=180 + theta, end=360 - theta, fill=person.hair)
    elif person.hair_style == 3:
        for k in range(9):
            a = math.pi * (1.05 + 0.9 * k / 8)
            hx, hy = cx + 0.95 * rx * math.cos(a), cy + 0.95 * ry * math.sin(a)
            d.ellipse(
                (hx - 0.3 * rx, hy - 0.3 * rx, hx + 0.3 * rx, hy + 0.3 * rx), fill=person.hair
            )

    eye_dx = 0.42 * u * person.eye_gap
    ew, eh = 0.2 * u, max(0.02 * u, 0.12 * u * g.eye_open)
    dark = (25, 20, 20)
    for side in (-1, 1):
        ex = cx + side * eye_dx
        d.ellipse((ex - ew, eye_y - eh, ex + ew, eye_y + eh), fill=(245, 243, 238))
        r, rh = 0.09 * u, min(0.09 * u, eh)
        d.ellipse((ex - r, eye_y - rh, ex + r, eye_y + rh), fill=person.iris)
        d.ellipse(
            (ex - 0.4 * r, eye_y - min(0.4 * r, rh), ex + 0.4 * r, eye_y + min(0.4 * r, rh)),
            fill=dark,
        )
        d.ellipse((ex - ew, eye_y - eh, ex + ew, eye_y + eh), outline=dark, width=w(0.05))
        if person.glasses:
            d.ellipse(
                (ex - 0.3 * u, eye_y - 0.22 * u, ex + 0.3 * u, eye_y + 0.22 * u),
                outline=(40, 40, 50),
                width=w(0.04),
            )
    if person.glasses:
        d.line(
            (cx - eye_dx + 0.3 * u, eye_y, cx + eye_dx - 0.3 * u, eye_y),
            fill=(40, 40, 50),
            width=w(0.04),
        )

    brow_y = eye_y - 0.3 * u - g.brow_raise * u
    brow_colour = _shade(person.hair, 0.6)
    for side in (-1, 1):
        outer = (cx + side * (eye_dx + 0.26 * u), brow_y)
        inner = (cx + side * (eye_dx - 0.22 * u), brow_y - g.brow_tilt * u)
        mid = ((outer[0] + inner[0]) / 2, (outer[1] + inner[1]) / 2 - g.brow_arch * u)
        d.line([outer, mid, inner], fill=brow_colour, width=w(0.16 * person.brow), joint="curve")

    nose_y = cy + 0.2 * ry
    nose = _shade(person.skin, 0.7)
    d.line(
        [(cx, eye_y + 0.05 * u), (cx - 0.08 * u, nose_y), (cx + 0.06 * u, nose_y)],
        fill=nose,
        width=w(0.04),
    )
    if g.wrinkle > 0.5:
        for k in range(3):
            y = eye_y + 0.06 * u + k * 0.08 * u
            d.line((cx - 0.1 * u, y, cx + 0.1 * u, y - 0.02 * u), fill=nose, width=w(0.04))
        for side in (-1, 1):
            d.line(
                (cx + side * 0.16 * u, nose_y, cx + side * 0.34 * u, nose_y + 0.3 * u),
                fill=nose,
                width=w(0.05),
            )

    _draw_mouth(d, person, g, cx, cy + 0.52 * ry + person.mouth_y * u, u)
    return layer.rotate(pose.angle, resample=Image.Resampling.BILINEAR, center=(cx, cy))


def _draw_mouth(
    d: ImageDraw.ImageDraw, person: Identity, g: Geometry, cx: float, my: float, u: float
) -> None:
    t = np.linspace(-1, 1, 17)
    x = cx + t * 0.42 * u * g.mouth_width
    base = my - g.mouth_curve * u * t**2 - g.sneer * u * np.maximum(0, person.sneer_side * t)
    opening = max(0.0, g.mouth_open) * u
    profile = np.sqrt(1 - t**2)
    lip_width = max(1, round(0.07 * u))
    if opening < 0.04 * u:
        d.line(
            list(zip(x, base, strict=True)),
            fill=person.lips,
            width=max(1, round(0.1 * u)),
            joint="curve",
        )
        return
    upper, lower = base - 0.3 * opening * profile, base + 0.7 * opening * profile
    upper_pts = list(zip(x, upper, strict=True))
    lower_pts = list(zip(x, lower, strict=True))
    d.polygon(upper_pts + lower_pts[::-1], fill=(70, 20, 30))
    if g.teeth > 0.5:
        teeth = np.minimum(upper + min(0.2 * u, 0.8 * opening) * profile, lower)
        d.polygon(upper_pts + list(zip(x, teeth, strict=True))[::-1], fill=(240, 238, 225))
    d.line(upper_pts, fill=person.lips, width=lip_width, joint="curve")
    d.line(lower_pts, fill=person.lips, width=lip_width, joint="curve")


def _blend(a: RGB, b: RGB, t: float) -> RGB:
    return tuple(int((1 - t) * x + t * y) for x, y in zip(a, b, strict=True))


@dataclass(frozen=True)
class Look:
    """How a camera renders a shot: gain, offset, colour cast, light gradient, blur and noise."""

    gain: float
    offset: float
    cast: tuple[float, float, float]
    grad_x: float
    grad_y: float
    blur: float
    noise: float

    @classmethod
    def random(cls, rng: np.random.Generator) -> Look:
        return cls(
            gain=rng.uniform(0.8, 1.15),
            offset=rng.normal(0, 8),
            cast=tuple((1 + rng.normal(0, 0.05, 3)).tolist()),
            grad_x=rng.normal(0, 0.25),
            grad_y=rng.normal(0, 0.12),
            blur=rng.uniform(0.3, 0.9) if rng.random() < 0.3 else 0.0,
            noise=rng.uniform(2, 7),
        )

    def apply(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        """The RGB ``image`` as this camera shoots it; ``rng`` draws this shot's flicker and noise."""
        if self.blur:
            image = image.filter(ImageFilter.GaussianBlur(self.blur))
        a = np.asarray(image, np.float32)
        h, w = a.shape[:2]
        light = (
            self.gain
            * (1 + rng.normal(0, 0.02))
            * (1 + self.grad_x * (np.arange(w) / w - 0.5)[None, :])
            * (1 + self.grad_y * (np.arange(h) / h - 0.5)[:, None])
        )
        a = a * light[..., None] * np.asarray(self.cast, np.float32) + self.offset
        a += self.noise * rng.standard_normal(a.shape, dtype=np.float32)
        return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def _background(rng: np.random.Generator, width: int, height: int, shapes: int) -> Image.Image:
    """A vertical colour gradient with ``shapes`` random boxes and ellipses on it, as RGBA."""
    top, bottom = np.asarray(_random_colour(rng), float), np.asarray(_random_colour(rng), float)
    t = np.linspace(0, 1, height)[:, None, None]
    a = np.broadcast_to((1 - t) * top + t * bottom, (height, width, 3))
    image = Image.fromarray(a.astype(np.uint8)).convert("RGBA")
    d = ImageDraw.Draw(image)
    for _ in range(shapes):
        x0, x1 = np.sort(rng.integers(0, width, 2))
        y0, y1 = np.sort(rng.integers(0, height, 2))
        draw = d.rectangle if rng.random() < 0.5 else d.ellipse
        draw((int(x0), int(y0), int(x1), int(y1)), fill=_random_colour(rng))
    return image


def _quota(total: int, minimum: int) -> np.ndarray:
    """Per-class counts of ``total`` samples at the paper's frequencies, each at least ``minimum``
    except Neutral, which takes the rest."""
    counts = np.maximum(np.round(CLASS_FREQUENCIES * total), minimum).astype(int)
    counts[0] = total - counts[1:].sum()
    if counts[0] <= 0:
        raise ConfigError(
            f"{total} samples are too few for every class to appear at least {minimum} times"
        )
    return counts


def _split_labels(rng: np.random.Generator, lengths: list[int]) -> list[np.ndarray]:
    """Per-frame labels of the videos of one split: runs of 8-30 frames of each expression amid
    neutral stretches, plus one stretch of ``-1`` (unannotated) in some videos.

    The class counts over the split follow the paper's frequencies exactly (``_quota``); runs cut
    by a video's end continue in the next video, as a new person.
    """
    n = len(lengths)
    unannotated = np.where(rng.random(n) < 0.4, rng.integers(6, 25, n), 0)
    unannotated[rng.integers(n)] = rng.integers(6, 25)
    counts = _quota(int(sum(lengths) - unannotated.sum()), MIN_CLASS_FRAMES)
    runs = []
    for label in range(1, len(counts)):
        left = counts[label]
        while left > 0:
            length = int(rng.integers(8, 31))
            length = left if left - length < 8 else length
            runs.append(np.full(length, label))
            left -= length
    cuts = np.sort(rng.choice(np.arange(1, counts[0]), size=len(runs), replace=False))
    neutral = np.split(np.zeros(counts[0], int), cuts)
    pieces = [neutral[0]]
    for i, r in enumerate(rng.permutation(len(runs))):
        pieces += [runs[r], neutral[i + 1]]
    flat = np.concatenate(pieces)
    videos, start = [], 0
    for length, gap in zip(lengths, unannotated.tolist(), strict=True):
        own = flat[start : start + length - gap]
        start += length - gap
        at = int(rng.integers(0, len(own) + 1))
        videos.append(np.concatenate([own[:at], np.full(gap, -1), own[at:]]))
    return videos


def _missing_frames(rng: np.random.Generator, labels: np.ndarray) -> list[int]:
    """1-based annotated frames without an image (a face detector that lost the face): 2-5
    consecutive frames of a neutral stretch, so that no expression run loses all its frames."""
    length = int(rng.integers(2, 6))
    windows = np.lib.stride_tricks.sliding_window_view(labels, length)
    starts = np.flatnonzero((windows == 0).all(axis=1))
    if not len(starts):
        return []
    start = int(rng.choice(starts))
    return list(range(start + 1, start + length + 1))


def _intensities(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Expression intensity per frame: each run has its own peak, reached over its first two
    frames and left over its last two; neutral and unannotated frames are 0."""
    level = np.zeros(len(labels))
    for run in np.split(np.arange(len(labels)), np.flatnonzero(np.diff(labels)) + 1):
        if labels[run[0]] <= 0:
            continue
        k = np.arange(len(run))
        edge = np.minimum(k, k[::-1])
        level[run] = rng.uniform(0.8, 1.0) * np.minimum(1, 0.6 + 0.2 * edge)
        level[run] += rng.normal(0, 0.03, len(run))
    return np.clip(level, 0, 1)


def _video_name(rng: np.random.Generator, number: int) -> str:
    """A name in the styles of Aff-Wild2's videos (``1-30-1280x720``, ``video12``)."""
    resolution = ("640x360", "1280x720", "1920x1080", "480x360")[rng.integers(4)]
    if rng.random() < 0.3:
        return f"video{number}"
    return f"{number}-{(24, 25, 30, 30, 60)[rng.integers(5)]}-{resolution}"


def _write_video(
    root: Path,
    name: str,
    labels: np.ndarray,
    missing: list[int],
    rng: np.random.Generator,
    scene: tuple[Image.Image, Look],
) -> None:
    """Frames ``cropped_aligned/<name>/00001.jpg ...`` of one person; ``missing`` frames are not
    written. Pose follows a slow random walk around the person's usual pose."""
    background, look = scene
    folder = root / FRAMES_DIR / name
    folder.mkdir(parents=True)
    person = Identity.random(rng)
    base = np.array(
        [rng.normal(0, 4), rng.normal(0, 0.02), rng.normal(0, 0.02), rng.uniform(0.95, 1.05)]
    )
    state = np.zeros(4)
    levels = _intensities(labels, rng)
    skip = set(missing)
    for frame, (label, level) in enumerate(zip(labels.tolist(), levels.tolist(), strict=True), 1):
        state = 0.9 * state + rng.normal(0, [0.7, 0.004, 0.004, 0.006])
        if frame in skip:
            continue
        geometry = person.geometry(max(label, 0), level, rng)
        face = draw_face(person, geometry, Pose(*(base + state).tolist()), background.width)
        image = Image.alpha_composite(background, face).convert("RGB").reduce(SUPERSAMPLE)
        look.apply(image, rng).save(
            folder / frame_file(frame), "JPEG", quality=AFFWILD2_JPEG_QUALITY
        )


def _scene(rng: np.random.Generator) -> tuple[Image.Image, Look]:
    """A video's out-of-focus background and camera look."""
    size = FACE_SIZE * SUPERSAMPLE
    background = _background(rng, size, size, 4).filter(ImageFilter.GaussianBlur(size * 0.03))
    return background, Look.random(rng)


def _counts(labels: np.ndarray) -> dict[str, int]:
    counts = np.bincount(labels, minlength=len(EXPRESSIONS_7))
    return dict(zip(EXPRESSIONS_7, counts.tolist(), strict=True))


def _write_affwild2(root: Path, seed: int, videos: dict[str, int], advance) -> dict[str, Any]:
    """The Aff-Wild2 part in the ABAW 2020 layout; returns its manifest entry per split."""
    rng = np.random.default_rng([seed, 0])
    numbers = (rng.permutation(sum(videos.values())) + 1).tolist()
    entry: dict[str, Any] = {"layout": LAYOUT}
    for s, (split, count) in enumerate(videos.items()):
        names = [_video_name(rng, numbers.pop()) for _ in range(count)]
        lengths = rng.integers(*VIDEO_FRAMES, count, endpoint=True).tolist()
        if split == "train":
            names[:2] = [f"{names[0]}_left", f"{names[0]}_right"]
            lengths[1] = lengths[0]
        labels = _split_labels(rng, lengths)
        gaps = rng.random(count) < 0.35
        gaps[rng.integers(count)] = True
        missing = [
            _missing_frames(rng, v) if gap else [] for v, gap in zip(labels, gaps, strict=True)
        ]
        scenes = [_scene(np.random.default_rng([seed, 2, s, i])) for i in range(count)]
        if split == "train":
            scenes[1] = scenes[0]  # the _left and _right people share one video's camera
        kept, skipped = [], dict.fromkeys(SKIP_REASONS, 0)
        for i, name in enumerate(names):
            rng_i = np.random.default_rng([seed, 1, s, i])
            _write_video(root, name, labels[i], missing[i], rng_i, scenes[i])
            write_annotation_file(annotation_dir(root, LAYOUT, split) / f"{name}.txt", labels[i])
            annotated = np.flatnonzero(labels[i] >= 0)
            kept.append(labels[i][np.setdiff1d(annotated, np.asarray(missing[i], int) - 1)])
            skipped["unannotated"] += int((labels[i] < 0).sum())
            skipped["no_image"] += len(missing[i])
            advance()
        flat = np.concatenate(kept)
        entry[split] = {
            "videos": sorted(names),
            "samples": len(flat),
            "class_counts": _counts(flat),
            "skipped": skipped,
        }
    return entry


IMAGE_QUERIES = ("angry", "disgusted", "afraid", "happy", "sad", "surprised", "neutral", "smiling")
IMAGE_SUBJECTS = ("actor", "student", "family", "woman", "man", "child", "team", "friends")


def _plan_image(rng: np.random.Generator) -> tuple[int, int, list[tuple[int, int, int]]]:
    """Size of a web image and its 1-4 non-overlapping face squares ``(x, y, side)``."""
    width = int(rng.integers(320, 513))
    height = int(width * rng.choice([0.5625, 0.75, 1.0, 1.25]))
    squares: list[tuple[int, int, int]] = []
    for _ in range(int(rng.choice([1, 2, 3, 4], p=[0.1, 0.35, 0.4, 0.15]))):
        for _attempt in range(50):
            side = int(rng.integers(64, min(150, width // 2, height // 2) + 1))
            x, y = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
            if all(
                x + side + 4 <= x2 or x2 + s2 + 4 <= x or y + side + 4 <= y2 or y2 + s2 + 4 <= y
                for x2, y2, s2 in squares
            ):
                squares.append((x, y, side))
                break
    return width, height, squares


def _write_expw_image(
    root: Path,
    name: str,
    plan: tuple[int, int, list[tuple[int, int, int]]],
    labels: list[int],
    rng: np.random.Generator,
) -> list[ExpWFace]:
    """One web image with a person per face square; returns its ``label.lst`` lines.

    The box is the square with a few pixels of detector jitter; the confidence is spread over
    10-100 like ExpW's detector scores.
    """
    width, height, squares = plan
    scene = _background(rng, width, height, int(rng.integers(4, 13)))
    faces = []
    for face_id, ((x, y, side), label) in enumerate(zip(squares, labels, strict=True)):
        person = Identity.random(rng)
        pose = Pose(
            rng.normal(0, 8), rng.normal(0, 0.02), rng.normal(0, 0.02), rng.uniform(0.92, 1.05)
        )
        level = rng.uniform(0.6, 1.0) if label else 0.0
        tile = draw_face(person, person.geometry(label, level, rng), pose, side * SUPERSAMPLE)
        scene.alpha_composite(tile.reduce(SUPERSAMPLE), dest=(x, y))
        jitter = rng.integers(-(side // 20), side // 20 + 1, 4).tolist()
        box = (
            max(0, y + jitter[0]),
            max(0, x + jitter[1]),
            min(width, x + side + jitter[2]),
            min(height, y + side + jitter[3]),
        )
        confidence = round(float(rng.uniform(10, 100)), 4)
        if confidence == CONFIDENCE_THRESHOLD:
            confidence += 0.0001
        faces.append(ExpWFace(name, face_id, *box, confidence, EXPW_TO_ABAW.index(label)))
    image = Look.random(rng).apply(scene.convert("RGB"), rng)
    image.save(root / IMAGES_DIR / name, "JPEG", quality=EXPW_JPEG_QUALITY)
    return faces


def _write_expw(root: Path, seed: int, images: int, advance) -> dict[str, Any]:
    """The ExpW part: images with several faces each, ``label.lst`` with one duplicate line."""
    rng = np.random.default_rng([seed, 3])
    (root / IMAGES_DIR).mkdir(parents=True)
    rngs = [np.random.default_rng([seed, 4, i]) for i in range(images)]
    plans = [_plan_image(image_rng) for image_rng in rngs]
    labels = rng.permutation(np.repeat(np.arange(7), _quota(sum(len(p[2]) for p in plans), 1)))
    faces: list[ExpWFace] = []
    for i, (plan, image_rng) in enumerate(zip(plans, rngs, strict=True)):
        name = f"{rng.choice(IMAGE_QUERIES)}_{rng.choice(IMAGE_SUBJECTS)}_{i + 1}.jpg"
        own = labels[len(faces) : len(faces) + len(plan[2])].tolist()
        faces += _write_expw_image(root, name, plan, own, image_rng)
        advance()
    confident = [j for j, face in enumerate(faces) if face.confidence >= CONFIDENCE_THRESHOLD]
    copied = int(rng.choice(confident))
    lines = list(faces)
    lines.insert(min(len(lines), copied + int(rng.integers(2, 6))), faces[copied])
    write_label_list(root / LABEL_FILE, lines)
    kept = np.asarray([EXPW_TO_ABAW[face.expression] for face in faces])
    below = sum(face.confidence < CONFIDENCE_THRESHOLD for face in faces)
    return {
        "images": images,
        "samples": len(faces),
        "class_counts": _counts(kept),
        "skipped": dict.fromkeys(SKIP_REASONS, 0) | {"duplicate": 1},
        "low_confidence": {"threshold": CONFIDENCE_THRESHOLD, "below": below},
    }


@dataclass(frozen=True)
class SampleData:
    """Where a copy of the sample data lies, and its manifest (what was written, by split)."""

    root: Path
    affwild2_dir: Path
    expw_dir: Path
    manifest: dict[str, Any] = field(repr=False)

    @classmethod
    def open(cls, root: str | os.PathLike) -> SampleData:
        """A complete copy at ``root``: its manifest is written last, so its presence means the
        data is complete."""
        root = Path(root)
        try:
            manifest = json.loads((root / MANIFEST).read_text())
        except FileNotFoundError as e:
            raise DataError(
                f"{root / MANIFEST}: missing; {root} is not complete sample data"
            ) from e
        except json.JSONDecodeError as e:
            raise DataError(f"{root / MANIFEST}: not valid JSON ({e})") from e
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"{root / MANIFEST}: cannot be read ({e})") from None
        if not isinstance(manifest, dict):
            raise DataError(
                f"{root / MANIFEST}: a JSON {type(manifest).__name__}, expected an object; "
                f"{root} is not complete sample data (delete it to have it written again)"
            )
        if manifest.get("version") != SAMPLE_VERSION:
            raise DataError(
                f"{root / MANIFEST}: version {manifest.get('version')!r}, expected {SAMPLE_VERSION!r}"
            )
        return cls(root, root / "affwild2", root / "expw", manifest)


def default_sample_dir() -> Path:
    """``$FERLIT_SAMPLE_DIR``, else ``~/.cache/ferlit/sample-v1``."""
    env = os.environ.get("FERLIT_SAMPLE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ferlit" / SAMPLE_VERSION


def _make_folder(folder: Path, why: str) -> None:
    """``mkdir -p folder``, or a DataError naming the part of the path in the way."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        blocker = folder
        while not blocker.exists() and blocker != blocker.parent:
            blocker = blocker.parent
        if blocker.exists() and not blocker.is_dir():
            raise DataError(
                f"{folder}: {blocker} is a file, so the folder cannot be made ({why})"
            ) from None
        raise DataError(f"{folder}: cannot be made ({e.strerror or e}; {why})") from None


#: The largest ``scale``: 32,000 videos of 120-180 frames (~5 million frames; Aff-Wild2 has 548
#: videos, ~2.8 million frames) and 300,000 images (ExpW has 91,793). ``synth --scale 1e9`` asked
#: numpy for 238 GiB (a raw MemoryError).
MAX_SCALE = 1000


def write_sample_data(
    out: str | os.PathLike, seed: int = 0, scale: float = 1.0, progress: bool = True
) -> SampleData:
    """Write the sample data under ``out`` (new or empty): ``affwild2/`` in the ABAW 2020 layout,
    ``expw/`` as distributed, and ``manifest.json`` with the class and skip counts a reader must
    find.

    At ``scale`` 1.0: 24 train and 8 val videos of 120-180 frames and 300 ExpW images; the
    numbers of videos and images scale linearly (at least 3 train and 2 val videos, 8 images).
    """
    out = Path(out)
    if not (math.isfinite(scale) and scale > 0):
        raise ConfigError(f"scale must be a positive number, got {scale}")
    if scale > MAX_SCALE:
        raise ConfigError(
            f"scale {scale:g} is more than {MAX_SCALE:g} (about {MAX_SCALE * 32:,.0f} videos and "
            f"{MAX_SCALE * 300:,.0f} images, more than the real data sets); expected a sample"
        )
    if not (isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0):
        raise ConfigError(f"seed must be an integer >= 0 (numpy's seeds), got {seed!r}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out}: exists and is not an empty folder; sample data needs a new one")
    _make_folder(out, "sample data needs a new or empty folder it can write")
    videos = {
        "train": max(3, round(TRAIN_VIDEOS * scale)),
        "val": max(2, round(VAL_VIDEOS * scale)),
    }
    images = max(8, round(EXPW_IMAGES * scale))
    with Progress(disable=not progress) as bar:
        task = bar.add_task("Drawing sample data", total=sum(videos.values()) + images)

        def advance() -> None:
            bar.advance(task)

        affwild2 = _write_affwild2(out / "affwild2", seed, videos, advance)
        expw = _write_expw(out / "expw", seed, images, advance)
    manifest = {
        "version": SAMPLE_VERSION,
        "seed": seed,
        "scale": scale,
        "classes": list(EXPRESSIONS_7),
        "affwild2": affwild2,
        "expw": expw,
    }
    with atomic_write(out / MANIFEST, "w", encoding="utf-8") as file:  # the data's completion mark
        file.write(json.dumps(manifest, indent=2) + "\n")
    return SampleData(out, out / "affwild2", out / "expw", manifest)


def ensure_sample_data(
    path: str | os.PathLike | None = None,
    seed: int = 0,
    scale: float = 1.0,
    progress: bool = True,
) -> SampleData:
    """The sample data at ``path`` (default: ``default_sample_dir()``), written first if absent.

    It is written into a temporary folder beside ``path`` and renamed into place, so an
    interrupted write is never taken for a complete copy, and two processes writing at once
    both end up with the one that was renamed first.
    """
    where = "" if path is not None else " (the sample data folder, FERLIT_SAMPLE_DIR)"
    path = Path(path) if path is not None else default_sample_dir()
    if not (path / MANIFEST).is_file():
        if path.exists() and not path.is_dir():
            raise DataError(
                f"{path}{where}: is a file; expected a folder for the sample data (set "
                "FERLIT_SAMPLE_DIR to another folder, or give the data folders)"
            )
        if path.exists() and any(path.iterdir()):
            raise DataError(
                f"{path}: exists but holds no {MANIFEST}, so it is not complete sample data "
                "(delete it to have it written again)"
            )
        _make_folder(path.parent, f"the sample data{where} is written into it")
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        except OSError as e:
            raise DataError(
                f"{path}{where}: cannot be written ({e.strerror or e} in {path.parent}); set "
                "FERLIT_SAMPLE_DIR to a writable folder, or give the data folders"
            ) from None
        try:
            write_sample_data(tmp, seed, scale, progress)
            try:
                tmp.rename(path)
            except OSError:
                if not (path / MANIFEST).is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    data = SampleData.open(path)
    if (data.manifest["seed"], data.manifest["scale"]) != (seed, scale):
        raise DataError(
            f"{path / MANIFEST}: sample data of seed {data.manifest['seed']} and scale "
            f"{data.manifest['scale']}, expected seed {seed} and scale {scale}"
        )
    return data
