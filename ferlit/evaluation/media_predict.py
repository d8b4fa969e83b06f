"""A trained model on new media: videos and photos in, per-frame expressions out.

``python -m ferlit predict --ckpt_path CKPT --input PATH --out DIR`` and ``ferlit.predict(ckpt,
PATH)`` run :func:`predict_media`: every frame of the media at ``PATH`` (a video, a folder of
videos, an image or a folder of images: :mod:`ferlit.evaluation.media`) is decoded, its faces
are detected, tracked and aligned to the model's input as Aff-Wild2's ``cropped_aligned`` faces
were (:mod:`ferlit.evaluation.faces`), the aligned faces are classified in batches on the
model's device, and the probabilities are smoothed over time per face track
(:mod:`ferlit.evaluation.smoothing`: a track's frames only, so two people's expressions never
mix and a window never crosses from one video into the next).

The table has one row per frame and face (:data:`FACE_COLUMNS`, then ``prob_<class>``,
``pred``, ``pred_name`` and, with smoothing on, ``pred_smoothed`` and ``pred_smoothed_name``);
a frame with no face is one row with ``face`` False and the face's columns empty, so that every
frame of every medium is accounted for. :func:`write_media_predictions` writes it
(``predictions.parquet``, ``predictions.csv``), an expression-over-time plot per video
(``expressions_<media>.png``) and, if asked, an annotated copy of each medium
(``annotated_<media>.mp4``, or ``.png`` for a photo).

A damaged image or video in a folder given as ``--input`` is skipped with a warning naming it
and the reason (:mod:`ferlit.evaluation.media`); the others are predicted, the skipped ones are
listed in ``table.attrs["skipped"]`` and in ``skipped.csv`` (media, reason), and only a folder
whose every file is damaged is an error. A damaged file given itself as ``--input`` is an error.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ferlit.errors import ConfigError
from ferlit.evaluation.detection_pool import HandedDetections
from ferlit.evaluation.faces import DEFAULT_MAX_SIDE, DEFAULT_MIN_SCORE, DEFAULT_UPSAMPLE
from ferlit.evaluation.plots import PlotFigure
from ferlit.evaluation.smoothing import check_kernel, check_window, smooth_probabilities
from ferlit.expressions import metric_key
from ferlit.io import (
    atomic_write,
    check_apart,
    check_creatable,
    check_output_folder,
    claim_outputs,
    fsync_dir,
    remove_outputs,
)

#: Faces classified per forward pass. Detection (~7 frames/s a CPU core, see
#: :mod:`ferlit.evaluation.faces`) is far slower than the model, so this only bounds memory.
BATCH_SIZE = 64

#: The five landmarks' column prefixes, in :class:`ferlit.evaluation.faces.Face`'s order.
LANDMARKS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")

#: The columns before the class probabilities: the medium's name (its path below ``--input``),
#: the 1-based frame number, the time in seconds from the video's declared fps (empty for a
#: photo or a video that declares none), whether a face was found, its track id (1, 2, ... per
#: medium), box (px, ``x1 y1`` exclusive), five landmarks (px) and detection score.
FACE_COLUMNS = (
    "media",
    "frame",
    "time_s",
    "face",
    "track",
    "x0",
    "y0",
    "x1",
    "y1",
    *(f"{p}_{axis}" for p in LANDMARKS for axis in ("x", "y")),
    "score",
)

#: The files every run writes into ``--out``; per medium also ``expressions_<name>.png``
#: (videos) and with ``annotated_video`` ``annotated_<name>.mp4`` / ``.png``.
OUTPUTS = ("predictions.parquet", "predictions.csv")
#: Written when damaged files of an ``--input`` folder were skipped: a row (media, reason) each.
SKIPPED = "skipped.csv"
PLOT_PATTERN = "expressions_*.png"
ANNOTATED_PATTERN = "annotated_*"


def resolve_device(accelerator: str | None, option: str = "--trainer.accelerator") -> torch.device:
    """The device for ``--trainer.accelerator`` (or ``predict_media``'s ``device``, named by
    ``option``): ``auto`` (a CUDA GPU when there is one, else the CPU), ``cpu``, ``gpu``/``cuda``
    /``cuda:N`` (refused when no such CUDA GPU is visible) or ``mps``; any other accelerator is
    refused (media are predicted in this one process)."""
    name = "auto" if accelerator is None else str(accelerator)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    index = name.partition(":")[2] if name.startswith("cuda:") else None
    if name in ("gpu", "cuda") or (index is not None and index.isdigit()):
        if not torch.cuda.is_available() or int(index or 0) >= torch.cuda.device_count():
            gpu = "CUDA GPU" if index is None else f"CUDA GPU {index}"
            raise ConfigError(
                f"{option} {name}: no {gpu} is visible to this process; use {option} cpu or auto"
            )
        return torch.device("cuda" if index is None else name)
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"{option} mps: MPS is not available on this machine")
        return torch.device("mps")
    raise ConfigError(
        f"{option} {name}: with --input faces are predicted on one device of this "
        "process; expected auto, cpu, gpu, cuda or mps"
    )


#: Longest output file name (UTF-8 bytes) made from a medium's name: Linux file systems allow
#: 255 bytes a name, and the hidden temporary file each is written through (``.<name>.<pid>@<host>.
#: <random>.tmp``, :func:`ferlit.io.atomic_write`) adds up to ~100 bytes with a 64-byte host name.
MAX_OUTPUT_NAME = 150


def output_names(prefix: str, media_names: Sequence[str], suffixes: Sequence[str]) -> list[str]:
    """The files in ``--out`` for media (``suffixes``: each one's extension): each name below
    ``--input`` with ``/`` as ``__`` (``sub/clip.mp4`` -> ``expressions_sub__clip.mp4.png``), so
    that all outputs sit in one folder, listed in its ``.ferlit-outputs.json``. Where two media
    would get the same file (``a/b.mp4`` and ``a__b.mp4``) or a name is longer than
    :data:`MAX_OUTPUT_NAME` bytes (deep folders), the name is cut to fit and ends with ``-`` and 8
    hex digits of the SHA-1 of the medium's name, so that no medium's plot or annotated copy
    replaces another's and every name can be created."""
    plain = [
        f"{prefix}{name.replace('/', '__')}{suffix}"
        for name, suffix in zip(media_names, suffixes, strict=True)
    ]
    counts: dict[str, int] = {}
    for name in plain:
        counts[name] = counts.get(name, 0) + 1
    names = []
    for name, suffix, file in zip(media_names, suffixes, plain, strict=True):
        if counts[file] == 1 and len(file.encode()) <= MAX_OUTPUT_NAME:
            names.append(file)
            continue
        digest = "-" + hashlib.sha1(name.encode("utf-8", "surrogateescape")).hexdigest()[:8]
        room = MAX_OUTPUT_NAME - len(f"{prefix}{digest}{suffix}".encode())
        flat = name.replace("/", "__").encode("utf-8", "surrogateescape")
        names.append(f"{prefix}{flat[:room].decode('utf-8', 'ignore')}{digest}{suffix}")
    return names


def check_media_outputs(
    out: str | os.PathLike, input_path: str | os.PathLike, overwrite: bool
) -> list[str]:
    """Refuse, before anything is decoded, an ``--out`` that cannot be written, overlaps
    ``--input``, holds a file of the user's that would be replaced, or holds earlier media
    predictions without ``--overwrite``; returns the earlier outputs ferlit wrote there."""
    if not os.fspath(input_path).strip():  # Path("") is ".": an unset variable read the cwd
        raise ConfigError(
            f"--input {os.fspath(input_path)!r}: empty; name a video, an image or a folder of "
            "them (. for the current folder)"
        )
    out = Path(out)
    check_creatable(out, "--out")
    check_apart(out, "--out", [("--input", input_path)])
    earlier = check_output_folder(out, "--out", (*OUTPUTS, SKIPPED), pattern=PLOT_PATTERN)
    earlier += check_output_folder(out, "--out", pattern=ANNOTATED_PATTERN)
    if earlier and not overwrite:
        raise ConfigError(
            f"--out {out}: holds earlier media predictions ({', '.join(earlier[:3])}"
            f"{' ...' if len(earlier) > 3 else ''}); choose another folder or pass --overwrite"
        )
    return earlier


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
    )


def _batches(
    frames: Iterator, batch_size: int, progress: Progress, detect_task, infer_task
) -> Iterator[tuple[list, np.ndarray | None]]:
    """``(frames, their crops stacked)`` about ``batch_size`` faces at a time."""
    pending: list = []
    crops: list[np.ndarray] = []
    count = found = 0
    for frame in frames:
        progress.advance(detect_task)
        pending.append(frame)
        if frame.faces:
            crops.append(frame.crops)
            count += len(frame.faces)
            found += len(frame.faces)
            progress.update(infer_task, total=found)
        if count >= batch_size:
            yield pending, np.concatenate(crops)
            pending, crops, count = [], [], 0
    if pending:
        yield pending, (np.concatenate(crops) if crops else None)


def predict_media(
    model: Any,
    path: str | os.PathLike,
    smooth: int = 0,
    smooth_kernel: str | None = None,
    upsample: int = DEFAULT_UPSAMPLE,
    min_score: float = DEFAULT_MIN_SCORE,
    max_side: int | None = DEFAULT_MAX_SIDE,
    max_unseen: int = 10,
    device: str | torch.device | None = None,
    progress: bool = True,
    tta: str = "none",
    batch_size: int = BATCH_SIZE,
    workers: int = 0,
) -> pd.DataFrame:
    """The per-frame, per-face predictions table of the media at ``path`` (module docstring).

    ``model``: an ``ExpressionModule`` (``ferlit.load_model``) or its checkpoint / run folder.
    ``smooth``: window in frames (0 = off; odd), ``smooth_kernel`` ``box`` (default) or
    ``gaussian``, per (medium, track) over frame numbers. ``upsample``, ``min_score``,
    ``max_side``: :class:`ferlit.evaluation.faces.FaceDetector`'s settings; ``max_unseen``: frames
    a track survives without its face (:class:`ferlit.evaluation.faces.Tracker`). ``device``:
    where the model runs (default: the model's own device, or for a checkpoint a CUDA GPU when
    there is one). ``tta``: test-time augmentation of :func:`ferlit.evaluation.inference.predict`
    (``"flip"``), run on ``batch_size`` faces at a time. ``progress``: rich progress bars for
    decoding + detection and for inference. ``workers``: processes that detect faces (0: this
    one); dlib's detector uses one core, so on a machine with more, N workers detect about N
    times the frames per second, in the same order and with the same results. Everything is
    checked before the first frame is decoded. A damaged file of a folder ``path`` is skipped
    (module docstring): ``table.attrs["skipped"]`` lists them (``{"media", "reason"}`` each).
    """
    from ferlit.evaluation.faces import FaceDetector, faces_in_media
    from ferlit.evaluation.inference import load_model, predict
    from ferlit.evaluation.media import every_medium_damaged, iter_media, list_media

    window = check_window(smooth)
    if smooth_kernel is not None and window <= 1:
        raise ConfigError(
            f"--smooth_kernel {smooth_kernel}: smoothing is off (--smooth {window}); give a "
            "window (--smooth 15)"
        )
    kernel = check_kernel(smooth_kernel or "box")
    detector = FaceDetector(upsample, min_score, max_side)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size: expected a positive number of faces, got {batch_size!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ConfigError(
            f"--face_workers: expected 0 (detect in this process) or a number of processes, "
            f"got {workers!r}"
        )
    if isinstance(device, str):  # "gpu" or "auto" reached torch.device, which refused them
        device = resolve_device(device, "device")
    if isinstance(model, str | os.PathLike):
        model = load_model(model, device or resolve_device("auto"))
    elif device is not None:
        model = model.to(device)
    names = tuple(model.class_names)
    size = int(model.hparams.input_size)
    skipped = [] if os.path.isdir(path) else None  # a file given itself stays an error
    media = list_media(path, skipped)
    listed_skipped = len(skipped or ())
    fps = {m.name: m.fps for m in media}
    decoded = iter_media(media, skipped)
    if workers:
        handed = HandedDetections()
        source = handed.frames(decoded, (upsample, min_score, max_side), workers)
        frames = faces_in_media(source, handed, size=size, max_unseen=max_unseen)
    else:
        frames = faces_in_media(decoded, detector, size=size, max_unseen=max_unseen)

    rows: list[dict[str, Any]] = []
    probs: list[np.ndarray] = []
    with _progress(progress) as bars:
        detect_task = bars.add_task("decode + detect (frames)", total=sum(m.frames for m in media))
        infer_task = bars.add_task("inference (faces)", total=0)
        for batch, crops in _batches(frames, batch_size, bars, detect_task, infer_task):
            if crops is not None:
                probs.append(predict(model, crops, batch_size, tta=tta))
                bars.advance(infer_task, len(crops))
            for frame in batch:
                rows.extend(_rows(frame, fps[frame.name]))
    if skipped and len(skipped) - listed_skipped == len(media):
        raise every_medium_damaged(Path(path), skipped)
    table = pd.DataFrame.from_records(rows, columns=list(FACE_COLUMNS))
    table = _with_predictions(table, probs, names, window, kernel)
    table.attrs["skipped"] = [{"media": s.name, "reason": s.reason} for s in skipped or ()]
    return table


def _rows(frame, fps: float | None) -> Iterator[dict[str, Any]]:
    time_s = (frame.number - 1) / fps if fps else np.nan
    common = {"media": frame.name, "frame": frame.number, "time_s": time_s}
    if not frame.faces:
        yield {**common, "face": False}
        return
    for face, track in zip(frame.faces, frame.track_ids, strict=True):
        row = {**common, "face": True, "track": track, "score": face.score}
        row.update(zip(("x0", "y0", "x1", "y1"), face.box, strict=True))
        for name, (x, y) in zip(LANDMARKS, face.landmarks, strict=True):
            row[f"{name}_x"], row[f"{name}_y"] = float(x), float(y)
        yield row


def _with_predictions(
    table: pd.DataFrame, probs: list[np.ndarray], names: Sequence[str], window: int, kernel: str
) -> pd.DataFrame:
    """Typed columns, the probabilities of the face rows, the labels raw and smoothed."""
    table = table.astype({"media": "string", "frame": "int32", "time_s": "float64", "face": "bool"})
    table["track"] = table["track"].astype("Int32")
    geometry = [c for c in FACE_COLUMNS[5:]]
    table[geometry] = table[geometry].astype("float32")
    face = table["face"].to_numpy()
    values = np.concatenate(probs) if probs else np.zeros((0, len(names)), np.float32)
    full = np.full((len(table), len(names)), np.nan, np.float32)
    full[face] = values
    for c, name in enumerate(names):
        table[f"prob_{metric_key(name)}"] = full[:, c]
    _labels(table, "pred", np.where(face, np.nan_to_num(full).argmax(1), -1), names)
    if window > 1:
        keys = (table["media"] + "\0" + table["track"].astype("string")).to_numpy()[face]
        smoothed = smooth_probabilities(
            keys, table["frame"].to_numpy()[face], values, window, kernel
        )
        labels = np.full(len(table), -1)
        labels[face] = smoothed.argmax(1)
        _labels(table, "pred_smoothed", labels, names)
    table.attrs["smoothing"] = {"window": window, "kernel": kernel if window > 1 else None}
    return table


def _labels(table: pd.DataFrame, column: str, labels: np.ndarray, names: Sequence[str]) -> None:
    """``column`` (class index, empty without a face) and ``<column>_name``."""
    table[column] = pd.array(np.where(labels >= 0, labels, 0), dtype="Int8")
    table.loc[labels < 0, column] = pd.NA
    lookup = np.asarray([*names, ""], dtype=object)
    table[f"{column}_name"] = pd.array(np.where(labels >= 0, lookup[labels], None), dtype="string")


# -- figures and files -------------------------------------------------------------------------

#: One colour per class (matplotlib's tab10, Other in grey), the same in every plot.
CLASS_COLOURS = (
    "#7f7f7f",  # Neutral
    "#d62728",  # Anger
    "#8c564b",  # Disgust
    "#9467bd",  # Fear
    "#2ca02c",  # Happiness
    "#1f77b4",  # Sadness
    "#ff7f0e",  # Surprise
    "#bcbd22",  # Other
)

#: Tracks drawn per plot at most (the ones with the most face frames): a detector's brief false
#: tracks would otherwise crowd out the people in the video.
MAX_TRACKS_PLOTTED = 6


def expression_figure(
    table: pd.DataFrame, media: str, checkpoint: str, max_tracks: int = MAX_TRACKS_PLOTTED
) -> Figure:
    """Expression over time in one medium: per track (most face frames first), each class's
    probability (raw, or smoothed when the table has ``pred_smoothed``) against time (s; frame
    number when the video declares no fps), and below it the label of each frame as a colour
    strip (blank where the track's face was not found)."""
    rows = table[(table["media"] == media) & table["face"]]
    names = [c[len("prob_") :] for c in table.columns if c.startswith("prob_")]
    smoothed = "pred_smoothed" in table.columns
    window = table.attrs.get("smoothing", {}).get("window")
    label_column = "pred_smoothed" if smoothed else "pred"
    counts = rows["track"].value_counts()
    tracks = sorted(counts.index, key=lambda t: (-counts[t], t))
    shown = tracks[:max_tracks] or []
    first, last = (
        int(table.loc[table["media"] == media, "frame"].min()),
        int(table.loc[table["media"] == media, "frame"].max()),
    )
    numbers = np.arange(first, last + 1)
    times = table.loc[table["media"] == media].set_index("frame")["time_s"]
    times = times[~times.index.duplicated()].reindex(numbers)
    use_time = bool(times.notna().all())
    x = times.to_numpy() if use_time else numbers
    fig = PlotFigure(figsize=(8.0, 0.6 + 2.3 * max(len(shown), 1)), layout="constrained")
    kind = f"smoothed (W={window} frames)" if smoothed else "raw"
    extra = f"; {len(shown)} of {len(tracks)} tracks" if len(tracks) > len(shown) else ""
    fig.suptitle(f"{media}: expression over time, {kind}{extra}\nmodel {checkpoint}", fontsize=9)
    if not shown:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no face found", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    grid = fig.add_gridspec(2 * len(shown), 1, height_ratios=[5, 1] * len(shown))
    colours = ListedColormap(CLASS_COLOURS[: len(names)])
    for i, track in enumerate(shown):
        ax = fig.add_subplot(grid[2 * i])
        strip = fig.add_subplot(grid[2 * i + 1], sharex=ax)
        track_rows = rows[rows["track"] == track].set_index("frame").reindex(numbers)
        probs = track_rows[[f"prob_{n}" for n in names]].to_numpy(np.float64)
        if smoothed:
            probs = _smoothed_probs(track_rows, probs, table.attrs["smoothing"])
        for c, name in enumerate(names):
            ax.plot(x, probs[:, c], color=CLASS_COLOURS[c], lw=1.2, label=name.capitalize())
        ax.set_ylim(0, 1)
        ax.set_ylabel(f"track {track}\nprobability", fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelbottom=False, labelsize=7)
        labels = track_rows[label_column].to_numpy(dtype=np.float64, na_value=np.nan)
        strip.imshow(
            np.ma.masked_invalid(labels)[None, :],
            aspect="auto",
            cmap=colours,
            vmin=-0.5,
            vmax=len(names) - 0.5,
            interpolation="nearest",
            extent=(x[0], x[-1] if len(x) > 1 else x[0] + 1, 0, 1),
        )
        strip.set_yticks([])
        strip.set_ylabel("label", fontsize=7, rotation=0, ha="right", va="center")
        strip.tick_params(labelsize=7)
        if i == 0:
            ax.legend(fontsize=7, ncol=len(names), loc="lower center", bbox_to_anchor=(0.5, 1.0))
    strip.set_xlabel("time (s)" if use_time else "frame")
    return fig


def _smoothed_probs(track_rows: pd.DataFrame, probs: np.ndarray, smoothing: dict) -> np.ndarray:
    """The track's smoothed probabilities on the frames it has (NaN elsewhere), as the table's
    ``pred_smoothed`` was computed."""
    present = ~np.isnan(probs).any(axis=1)
    out = np.full_like(probs, np.nan)
    if present.any():
        frames = track_rows.index.to_numpy()[present]
        out[present] = smooth_probabilities(
            np.zeros(len(frames)), frames, probs[present], smoothing["window"], smoothing["kernel"]
        )
    return out


def _annotate(rgb: np.ndarray, rows: pd.DataFrame, column: str) -> np.ndarray:
    """A BGR copy of ``rgb`` with each face's box, track id and label drawn."""
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    thickness = max(1, round(max(rgb.shape[:2]) / 400))
    for row in rows.itertuples(index=False):
        if not row.face:
            continue
        label = int(getattr(row, column))
        r, g, b = (int(CLASS_COLOURS[label][k : k + 2], 16) for k in (1, 3, 5))
        p0 = (round(row.x0), round(row.y0))
        cv2.rectangle(bgr, p0, (round(row.x1) - 1, round(row.y1) - 1), (b, g, r), thickness)
        name = getattr(row, f"{column}_name")
        probability = getattr(row, f"prob_{metric_key(name)}")
        text = f"{row.track}: {name} {probability:.2f}"
        cv2.putText(
            bgr,
            text,
            (p0[0], max(p0[1] - 4 * thickness, 12)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.4 * thickness,
            (b, g, r),
            thickness,
            cv2.LINE_AA,
        )
    return bgr


def _write_annotated(medium, rows: pd.DataFrame, column: str, path: Path) -> None:
    """An annotated copy of ``medium``: a video through ``cv2.VideoWriter`` (MPEG-4 part 2,
    ``mp4v``, at the video's fps or 25), a photo as PNG; written beside ``path`` under a hidden
    temporary name, then renamed over it (whole or not at all, as :func:`ferlit.io.atomic_write`)."""
    from ferlit.evaluation.media import read_frames

    by_frame = dict(tuple(rows.groupby("frame", sort=False)))
    if medium.kind == "image":
        _, rgb = next(read_frames(medium))
        ok, png = cv2.imencode(".png", _annotate(rgb, by_frame[1], column))
        with atomic_write(path) as file:
            file.write(png.tobytes())
        return
    temporary = path.with_name(f".{path.stem}.{os.getpid()}@{socket.gethostname()}.partial.mp4")
    writer = None
    try:
        for number, rgb in read_frames(medium):
            if writer is None:
                height, width = rgb.shape[:2]
                fourcc = cv2.VideoWriter_fourcc(*"mp4v")
                writer = cv2.VideoWriter(
                    str(temporary), fourcc, medium.fps or 25.0, (width, height)
                )
                if not writer.isOpened():
                    raise OSError(f"{path}: OpenCV's VideoWriter cannot write an mp4v video here")
            frame_rows = by_frame.get(number)
            bgr = (
                _annotate(rgb, frame_rows, column)
                if frame_rows is not None
                else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
            )
            writer.write(bgr)
        writer.release()
        writer = None
        os.replace(temporary, path)
        fsync_dir(path.parent)
    finally:
        if writer is not None:
            writer.release()
        with contextlib.suppress(OSError):
            os.unlink(temporary)


#: First characters that make a spreadsheet (Excel, LibreOffice Calc) read a CSV cell as a
#: formula (OWASP's "CSV Injection": ``=``, ``+``, ``-``, ``@``, tab, carriage return).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


#: ``to_csv`` options of the CSVs for spreadsheets. RFC 4180's CRLF ends each row, and Python's
#: csv writer quotes a cell holding any character of the line ending: with pandas' default
#: ``"\n"`` a bare CR in a file name (``x\r=2+3.jpg``) went out unquoted, and Excel and
#: LibreOffice, which break rows at a CR too, read ``=2+3.jpg`` as a new row's formula.
SPREADSHEET_CSV = {"index": False, "lineterminator": "\r\n"}


def _starts_like_a_formula(value: Any) -> bool:
    """Text starting with a :data:`FORMULA_STARTS` character, also behind leading white space:
    a spreadsheet importing with "trim spaces" (a LibreOffice option) reads ``" =1+1"`` as
    ``=1+1``."""
    return isinstance(value, str) and (
        value.startswith(FORMULA_STARTS) or value.lstrip().startswith(FORMULA_STARTS)
    )


def spreadsheet_safe(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with each text cell that starts like a formula prefixed with ``'`` (OWASP's
    remedy for CSV injection): the names in a CSV come from the user's files (a video named
    ``=HYPERLINK(...).mp4``), and a spreadsheet would run them when a researcher opens the file.
    Numbers (a negative coordinate) are left alone; so are ``predictions.parquet``, read by
    programs, and the ABAW submission files, whose format the challenge fixes."""
    safe = table.copy()
    for column in safe.columns:
        if not (pd.api.types.is_string_dtype(safe[column]) or safe[column].dtype == object):
            continue
        text = safe[column]
        risky = text.map(_starts_like_a_formula)
        safe[column] = text.where(~risky.astype(bool), "'" + text.astype("string"))
    return safe


def write_media_predictions(
    table: pd.DataFrame,
    out: str | os.PathLike,
    checkpoint: str,
    media: Sequence,
    input_path: str | os.PathLike,
    annotated: bool = False,
    overwrite: bool = False,
) -> list[str]:
    """Write ``table`` (:func:`predict_media`) into ``out``: ``predictions.parquet`` and
    ``predictions.csv``, ``expressions_<name>.png`` per video, with ``annotated`` an annotated
    copy of each medium (``media``: :func:`ferlit.evaluation.media.list_media` of ``input_path``);
    each file whole or not at all and listed as ferlit's first. The media
    :func:`predict_media` skipped as damaged (``table.attrs["skipped"]``) get no plot or copy, and
    are listed in ``skipped.csv``. With ``overwrite`` the earlier media predictions ferlit wrote
    there are removed first. Returns the names written."""
    out = Path(out)
    earlier = check_media_outputs(out, input_path, overwrite)
    label = "pred_smoothed" if "pred_smoothed" in table.columns else "pred"
    skipped = pd.DataFrame(table.attrs.get("skipped") or [], columns=["media", "reason"])
    media = [m for m in media if m.name not in set(skipped["media"])]
    media_names = [m.name for m in media]
    kinds = [".mp4" if m.kind == "video" else ".png" for m in media]
    plots = dict(
        zip(
            media_names,
            output_names("expressions_", media_names, [".png"] * len(media)),
            strict=True,
        )
    )
    copies = dict(zip(media_names, output_names("annotated_", media_names, kinds), strict=True))
    names = list(OUTPUTS)
    names += [plots[m.name] for m in media if m.kind == "video"]
    if annotated:
        names += [copies[m.name] for m in media]
    if len(skipped):
        names.append(SKIPPED)
    claim_outputs(out, names)
    if overwrite:
        remove_outputs(out, earlier)
    with atomic_write(out / "predictions.parquet") as file:
        table.to_parquet(file, index=False)
    with atomic_write(out / "predictions.csv", "w", encoding="utf-8", newline="") as file:
        spreadsheet_safe(table).to_csv(file, float_format="%.6g", **SPREADSHEET_CSV)
    if len(skipped):
        with atomic_write(out / SKIPPED, "w", encoding="utf-8", newline="") as file:
            spreadsheet_safe(skipped).to_csv(file, **SPREADSHEET_CSV)
    for medium in media:
        if medium.kind == "video":
            figure = expression_figure(table, medium.name, checkpoint)
            with atomic_write(out / plots[medium.name]) as file:
                figure.savefig(file, format="png", dpi=110)
        if annotated:
            rows = table[table["media"] == medium.name]
            _write_annotated(medium, rows, label, out / copies[medium.name])
    return names
