"""Sample data: drawn faces (:mod:`ferlit.data.sample.draw`) written in the real Aff-Wild2 and
ExpW layouts, to try ferlit without either.

Aff-Wild2 and ExpW are licensed to individual researchers, so examples, tests and CI cannot ship
them. This module writes a stand-in that exercises the same code paths: the ABAW 2020 folder
layout and annotation format, the quirks of the real files (``-1`` unannotated frames, annotated
frames without an image, ``_left``/``_right`` videos, several faces per ExpW image, a duplicate
``label.lst`` line) and the paper's class imbalance, with JPEG compression as in the wild.

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
from typing import Any

import numpy as np
from PIL import Image
from rich.progress import Progress

from ferlit.data.index import SKIP_REASONS
from ferlit.data.readers.affwild2 import (
    FRAMES_DIR,
    annotation_dir,
    frame_file,
    write_annotation_file,
)
from ferlit.data.readers.expw import IMAGES_DIR, LABEL_FILE, ExpWFace, write_label_list
from ferlit.data.sample.draw import (
    SUPERSAMPLE,
    Identity,
    Look,
    Pose,
    draw_background,
    draw_face,
    draw_scene,
)
from ferlit.errors import ConfigError, DataError
from ferlit.expressions import EXPRESSIONS_7, EXPW_TO_ABAW
from ferlit.io import write_json

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
AFFWILD2_JPEG_QUALITY = 90
EXPW_JPEG_QUALITY = 85
#: ExpW confidences are drawn on both sides of this, so ``min_confidence`` has faces to drop.
CONFIDENCE_THRESHOLD = 50.0


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
        scenes = [draw_scene(np.random.default_rng([seed, 2, s, i])) for i in range(count)]
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
    scene = draw_background(rng, width, height, int(rng.integers(4, 13)))
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
    write_json(out / MANIFEST, manifest)  # the data's completion mark
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
