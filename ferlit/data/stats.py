"""What a run would train and validate on: kept samples, class counts, skips and class weights.

The split is the paper's (Cafarelli et al. 2020): train is Aff-Wild2 train merged with
ExpW, validation is Aff-Wild2 val; the class weights are count(most common class) / count(c) of
the merged training set. ``plot_stats`` draws the class distributions as in the paper's Figures
1 and 2.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backend_bases import FigureCanvasBase
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter
from rich.console import Console
from rich.table import Table

from ferlit.data.datamodule import ExpressionDataModule, class_weights_from_counts
from ferlit.data.images import check_box_overflow
from ferlit.data.index import SKIP_REASONS, FrameIndex
from ferlit.data.readers.affwild2 import split_overlap_message, videos_in_both_splits
from ferlit.errors import ConfigError, DataWarning
from ferlit.expressions import class_names
from ferlit.io import OUTPUTS_MANIFEST, atomic_write, claim_outputs, outputs_written

#: Aff-Wild2 videos with annotated frames but no image of any (``read_affwild2``), a count of
#: videos beside the skipped frames.
VIDEOS_KEY = "no_image_videos"
SOURCE_NAMES = {"affwild2": "Aff-Wild2", "expw": "ExpW"}
#: The data set (a key of ``SOURCE_NAMES``) of each DataModule part stats counts.
PART_SOURCES = {"affwild2_train": "affwild2", "affwild2_val": "affwild2", "expw": "expw"}
#: Bar colours of each source's segment in :func:`stats_figure`.
SOURCE_COLORS = {"affwild2": "tab:blue", "expw": "tab:green"}
SKIP_NAMES = {
    "unannotated": "unannotated (-1)",
    "no_image": "no image",
    "other": "Other",
    "duplicate": "duplicate line",
    "low_confidence": "low confidence",
    "box_outside_image": "box outside its image",
    "empty_box": "empty box",
    "not_a_file": "frame not a regular file",
}
#: Aff-Wild2 videos in both splits (``affwild2.videos_in_both_splits``), each with its two
#: annotation files; empty for the challenge's disjoint splits.
OVERLAP_KEY = "videos_in_both_splits"
#: Kept ExpW faces whose box runs past the image edge, by what ``data.expw_box_overflow`` does.
BOX_KEYS = {"clip": "box_clipped", "pad": "box_padded"}


def split_title(split: str, sources: dict[str, Any]) -> str:
    """A split's title naming the sources counted in it: ``train (Aff-Wild2 train + ExpW)``,
    ``train (Aff-Wild2 train)`` when only Aff-Wild2 was given, ``train (ExpW)``, ``val
    (Aff-Wild2 val)``."""
    names = [
        SOURCE_NAMES[source] + (f" {split}" if source == "affwild2" else "") for source in sources
    ]
    return f"{split} ({' + '.join(names)})"


def index_stats(index: FrameIndex, box_overflow: str | None = None) -> dict[str, Any]:
    """Kept samples, per-class counts (by class name) and skips (by reason) of one index; with
    ``box_overflow`` (ExpW), how many kept boxes run past their image's edge, as ``box_clipped``
    or ``box_padded`` by what is done with them."""
    names = class_names(index.num_classes)
    boxes = {}
    if box_overflow is not None:
        boxes = dict.fromkeys(BOX_KEYS.values(), 0)
        boxes[BOX_KEYS[box_overflow]] = index.boxes_past_edge()
    return {
        "samples": len(index),
        "class_counts": dict(zip(names, index.class_counts().tolist(), strict=True)),
        "skipped": {reason: int(index.skipped.get(reason, 0)) for reason in SKIP_REASONS},
        **boxes,
    }


def _total(sources: dict[str, dict[str, Any]]) -> dict[str, Any]:
    parts = list(sources.values())
    return {
        "samples": sum(p["samples"] for p in parts),
        "class_counts": {
            c: sum(p["class_counts"][c] for p in parts) for c in parts[0]["class_counts"]
        },
        "skipped": {r: sum(p["skipped"][r] for p in parts) for r in SKIP_REASONS},
        **{k: sum(p.get(k, 0) for p in parts) for k in [VIDEOS_KEY] if any(k in p for p in parts)},
        **{k: sum(p[k] for p in parts if k in p) for k in BOX_KEYS.values() if k in parts[-1]},
    }


def dataset_stats(
    affwild2_dir: str | os.PathLike | None = None,
    expw_dir: str | os.PathLike | None = None,
    num_classes: int = 7,
    affwild2_layout: str | None = None,
    expw_min_confidence: float | None = None,
    progress: bool = True,
    expw_box_overflow: str = "clip",
) -> dict[str, Any]:
    """Statistics of the training and validation sets, as one JSON-ready dict.

    The sets are the DataModule's parts (``ExpressionDataModule.part_names`` / ``part``) with
    these options, read afresh (no index cache: the counts are of the data as it is now).
    ``splits.train`` (and ``splits.val`` when Aff-Wild2 is given) holds the totals and, under
    ``sources``, the same numbers per data set. ``class_weights`` (by class name) is None when a
    class has no training sample, e.g. Other in an 8-class run on ABAW 2020 data.
    ``expw_box_overflow`` ("clip" or "pad") names the count of ExpW boxes past their image's
    edge. Without ``progress`` the readers' progress bars go to stderr, leaving stdout to the
    JSON.
    """
    if affwild2_dir is None and expw_dir is None:
        raise ConfigError("no data: give an Aff-Wild2 folder, an ExpW folder, or both")
    check_box_overflow(expw_box_overflow)
    names = class_names(num_classes)
    datamodule = ExpressionDataModule.for_parts(
        affwild2_dir,
        expw_dir,
        num_classes=num_classes,
        affwild2_layout=affwild2_layout,
        expw_min_confidence=expw_min_confidence,
        expw_box_overflow=expw_box_overflow,
        index_cache=False,
    )
    splits: dict[str, dict[str, Any]] = {}
    indexes: dict[str, FrameIndex] = {}
    with contextlib.nullcontext() if progress else contextlib.redirect_stdout(sys.stderr):
        for split in ("train", "val"):
            sources: dict[str, dict[str, Any]] = {}
            for part in datamodule.part_names(split):
                index = indexes[part] = datamodule.part(part)[1]
                source = PART_SOURCES[part]
                if source == "expw":
                    sources[source] = index_stats(index, expw_box_overflow)
                else:  # videos, not frames: annotated but without any image (DataWarnings)
                    videos = {VIDEOS_KEY: int(index.skipped.get(VIDEOS_KEY, 0))}
                    sources[source] = {**index_stats(index), **videos}
            if sources:
                splits[split] = {**_total(sources), "sources": sources}
    both: list[tuple[str, str, str]] = []
    if "affwild2_val" in indexes:
        both = videos_in_both_splits(indexes["affwild2_train"], indexes["affwild2_val"])
        if both:  # a run stops on these unless data.allow_split_overlap is true
            warnings.warn(
                f"{split_overlap_message(both)}; training stops on this unless "
                "data.allow_split_overlap is true",
                DataWarning,
                stacklevel=2,
            )
    counts = list(splits["train"]["class_counts"].values())
    weights = None
    if min(counts) > 0:
        weights = dict(zip(names, class_weights_from_counts(counts), strict=True))
    return {
        "num_classes": num_classes,
        "classes": list(names),
        "splits": splits,
        "class_weights": weights,
        OVERLAP_KEY: [{"video": v, "train": t, "val": w} for v, t, w in both],
    }


def split_table(split: str, entry: dict[str, Any], weights: dict[str, float] | None) -> Table:
    """A split's class counts and skips per source, with totals, shares and (train) weights."""
    sources = entry["sources"]
    several = len(sources) > 1
    table = Table(title=split_title(split, sources), title_justify="left")
    table.add_column("")
    for source in sources:
        table.add_column(SOURCE_NAMES[source], justify="right")
    if several:
        table.add_column("total", justify="right")
    table.add_column("share", justify="right")
    weights = weights if split == "train" else None
    if weights:
        table.add_column("class weight", justify="right")

    def cells(values: list[int], total: int) -> list[str]:
        return [f"{v:,}" for v in values] + ([f"{total:,}"] if several else [])

    kept = max(entry["samples"], 1)
    for name, count in entry["class_counts"].items():
        values = [s["class_counts"][name] for s in sources.values()]
        weight = [f"{weights[name]:.2f}"] if weights else []
        table.add_row(name, *cells(values, count), f"{100 * count / kept:.1f}%", *weight)
    table.add_section()
    values = [s["samples"] for s in sources.values()]
    table.add_row("kept", *cells(values, entry["samples"]), "100.0%")
    for key in BOX_KEYS.values():
        if any(s.get(key) for s in sources.values()):
            values = [s.get(key, 0) for s in sources.values()]
            what = "clipped to the image" if key == "box_clipped" else "padded with black"
            table.add_row(f"  of which box {what}", *cells(values, entry[key]))
    for reason in SKIP_REASONS:
        values = [s["skipped"][reason] for s in sources.values()]
        table.add_row(f"skipped: {SKIP_NAMES[reason]}", *cells(values, entry["skipped"][reason]))
    if VIDEOS_KEY in entry:
        values = [s.get(VIDEOS_KEY, 0) for s in sources.values()]
        table.add_row("videos without any image", *cells(values, entry[VIDEOS_KEY]))
    return table


def print_stats(stats: dict[str, Any], console: Console | None = None) -> None:
    """One table per split (see ``split_table``), and why class weights are missing if they are."""
    console = console or Console()
    for split, entry in stats["splits"].items():
        console.print(split_table(split, entry, stats["class_weights"]))
    if stats["class_weights"] is None:
        missing = [c for c, n in stats["splits"]["train"]["class_counts"].items() if n == 0]
        console.print(f"class weights: undefined, no training sample of {', '.join(missing)}")


def check_plot_path(path: str | os.PathLike, option: str = "--plot") -> None:
    """Refuse, before any indexing, a plot path matplotlib could not write: a format it has no
    writer for (it would raise only after the whole data set was counted), no suffix (it would
    write ``<path>.png``, not the file named), a folder, or a folder that does not exist."""
    path = Path(path)
    formats = sorted(FigureCanvasBase.get_supported_filetypes())
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in formats:
        found = f"format {path.suffix!r}" if path.suffix else "no suffix"
        raise ConfigError(
            f"{option} {path}: {found}; expected a file name ending in one of "
            f"{', '.join('.' + f for f in formats)}"
        )
    if path.is_dir():
        raise ConfigError(f"{option} {path}: is a folder; expected the plot's file name")
    parent = path.parent
    if not parent.is_dir():
        what = "is not a folder" if parent.exists() else "does not exist"
        raise ConfigError(f"{option} {path}: the folder {parent} {what}; create it first")
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"{option} {path}: the folder {parent} is not writable")
    if os.path.lexists(path) and path.name not in outputs_written(parent):
        raise ConfigError(
            f"{option} {path}: exists and was not written by ferlit (not listed in "
            f"{parent / OUTPUTS_MANIFEST}); ferlit never replaces a file of yours: choose "
            "another name"
        )


def stats_figure(stats: dict[str, Any], log: bool = False) -> Figure:
    """Bar charts of the class distribution of each split (the paper's Figures 1 and 2): one
    bar segment per source (Aff-Wild2, ExpW: the train split merges both), labelled with the
    class's count and its share of the split; ``log`` puts the counts on a log axis, where rare
    classes stay visible next to Neutral. Titles name the sources counted (:func:`split_title`)
    and say when the data is ferlit's drawn sample data."""
    splits = stats["splits"]
    fig = Figure(figsize=(5.5 * len(splits), 4.2), layout="constrained")
    axes = fig.subplots(1, len(splits), squeeze=False)[0]
    for ax, (split, entry) in zip(axes, splits.items(), strict=True):
        names = list(entry["class_counts"])
        bottom = np.zeros(len(names), dtype=np.int64)
        bars = None
        for source, part in entry["sources"].items():
            values = np.asarray([part["class_counts"][n] for n in names], dtype=np.int64)
            bars = ax.bar(
                names,
                values,
                bottom=bottom,
                color=SOURCE_COLORS[source],
                label=f"{SOURCE_NAMES[source]}: {part['samples']:,}",
            )
            bottom += values
        kept = max(entry["samples"], 1)
        labels = [f"{c:,}\n{100 * c / kept:.1f}%" for c in bottom]
        ax.bar_label(bars, labels=labels, fontsize=7)
        sample = " - ferlit sample data (drawn faces)" if stats.get("sample_data") else ""
        ax.set_title(
            f"{split_title(split, entry['sources'])}: {entry['samples']:,} samples{sample}",
            fontsize=9,
        )
        ax.set_ylabel("samples (log scale)" if log else "samples")
        ax.margins(y=0.15)
        if len(entry["sources"]) > 1:
            ax.legend(fontsize=8, title="source", title_fontsize=8)
        if log:
            ax.set_yscale("log")
            ax.set_ylim(bottom=1)
            ax.yaxis.set_minor_formatter(NullFormatter())
        ax.tick_params(axis="x", labelrotation=35)
    return fig


def plot_stats(stats: dict[str, Any], path: str | os.PathLike, log: bool = False) -> None:
    """Write :func:`stats_figure` to ``path``, checked first (:func:`check_plot_path`)."""
    check_plot_path(path, "plot path")
    fig = stats_figure(stats, log)
    path = Path(path)
    try:
        claim_outputs(path.parent, [path.name])  # a later plot may replace it, nothing else
        with atomic_write(path) as file:  # whole or absent, even on a full disk
            fig.savefig(file, format=path.suffix.lower().lstrip("."), dpi=120)
    except OSError as e:  # checked writable above; a full disk or a quota remains
        raise ConfigError(f"plot path {path}: cannot be written ({e.strerror or e})") from None
