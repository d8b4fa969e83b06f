"""Drawing the sample data's faces: a person (``Identity``), an expression's geometry
(``Geometry``, ``GEOMETRY``), a head pose (``Pose``) and a camera (``Look``) make one PIL image.

Each ABAW expression has its own bold geometry (mouth curve and opening, brows, eyes), after the
action units of each basic emotion, so that a small model learns it in minutes on a CPU, while
identity, pose, lighting, noise and blur vary as they do in the wild. Every random draw comes from
the ``numpy.random.Generator`` given, so the same stream gives the same pixels.
:mod:`ferlit.data.sample.write` lays these images out as Aff-Wild2 and ExpW.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

FACE_SIZE = 112  # Aff-Wild2 cropped_aligned faces are 112x112
SUPERSAMPLE = 2  # drawn at twice the size, then reduced: anti-aliased edges

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


def draw_background(rng: np.random.Generator, width: int, height: int, shapes: int) -> Image.Image:
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


def draw_scene(rng: np.random.Generator) -> tuple[Image.Image, Look]:
    """A video's out-of-focus background and camera look."""
    size = FACE_SIZE * SUPERSAMPLE
    background = draw_background(rng, size, size, 4).filter(ImageFilter.GaussianBlur(size * 0.03))
    return background, Look.random(rng)
