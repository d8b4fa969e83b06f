"""``python -m ferlit.data synth|stats|pack|check``: write the sample data; count what a run would
use; pack the faces into memory-mapped arrays for fast loading; find damaged images.

Bad input (a missing folder, a malformed annotation line) prints ``error: <message>`` naming the
file or option and exits with status 2, like a usage error, without a traceback. ``check`` exits
with status 1 when it found damaged images, 0 when it found none.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from ferlit.data.readers.affwild2 import LAYOUTS
from ferlit.data.sample.synth import write_sample_data
from ferlit.errors import (
    ConfigError,
    DataError,
    FerlitError,
    data_warnings_as_lines,
    quiet_closed_stdout,
    user_message,
)


def _synth(args: argparse.Namespace) -> None:
    data = write_sample_data(args.out, seed=args.seed, scale=args.scale, progress=True)
    m = data.manifest
    print(f"Sample data written to {data.root}")
    for split in ("train", "val"):
        entry = m["affwild2"][split]
        print(
            f"  Aff-Wild2 {split}: {len(entry['videos'])} videos, {entry['samples']:,} frames "
            f"-> {data.affwild2_dir}"
        )
    print(
        f"  ExpW: {m['expw']['images']} images, {m['expw']['samples']:,} faces -> {data.expw_dir}"
    )


def _refuse_expw_options_without_expw(args: argparse.Namespace) -> None:
    """An ExpW option given without ``--expw-dir`` would be accepted and do nothing: refused."""
    if args.expw_dir is not None:
        return
    for name in ("expw_min_confidence", "expw_margin", "expw_box_overflow"):
        if getattr(args, name, None) is not None:
            option = "--" + name.replace("_", "-")
            raise ConfigError(f"{option}: only used with --expw-dir (no ExpW folder given)")


def _stats(args: argparse.Namespace) -> None:
    _refuse_expw_options_without_expw(args)
    for option, folder in (("--affwild2-dir", args.affwild2_dir), ("--expw-dir", args.expw_dir)):
        if folder is not None and not folder.is_dir():
            raise DataError(f"{option} {folder}: folder does not exist")
    from ferlit.data.stats import check_plot_path, dataset_stats, plot_stats, print_stats

    if args.plot is not None:
        check_plot_path(args.plot)  # before indexing, which takes minutes at full scale

    stats = dataset_stats(
        args.affwild2_dir,
        args.expw_dir,
        num_classes=args.num_classes,
        affwild2_layout=args.affwild2_layout,
        expw_min_confidence=args.expw_min_confidence,
        progress=not args.json,
        expw_box_overflow=args.expw_box_overflow or "clip",
    )
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        print_stats(stats)
    if args.plot is not None:
        plot_stats(stats, args.plot, log=args.log)
        if not args.json:
            print(f"Class distribution plotted to {args.plot}")


def _pack(args: argparse.Namespace) -> None:
    _refuse_expw_options_without_expw(args)
    from ferlit.data.pack import pack  # imports torch: slow

    result = pack(
        args.out,
        args.affwild2_dir,
        args.expw_dir,
        size=args.size,
        num_classes=args.num_classes,
        layout=args.affwild2_layout,
        expw_min_confidence=args.expw_min_confidence,
        expw_margin=args.expw_margin or 0.0,
        expw_box_overflow=args.expw_box_overflow or "clip",
        workers=args.workers,
        index_cache=not args.no_index_cache,
        index_cache_dir=args.index_cache_dir,
    )
    print(f"Packed {result.image_size}x{result.image_size} faces in {result.root}")
    for part, info in result.manifest["parts"].items():
        size = result.frames_file(part).stat().st_size
        print(f"  {part}: {info['samples']:,} faces, {size / 2**30:.2f} GiB")
    expw = result.manifest["parts"].get("expw")
    if expw is not None:
        done = "clipped" if result.manifest["expw_box_overflow"] == "clip" else "padded"
        print(
            f"  ExpW boxes past the image edge {done}: {expw['box_' + done]:,}; skipped with no "
            f"pixel in their image: {expw['skipped']['box_outside_image']:,}, empty: "
            f"{expw['skipped'].get('empty_box', 0):,}"
        )
    print(f"Train from it with --data.packed_dir {result.root}")


#: The files ``check`` decodes: the formats of Aff-Wild2's frames and ExpW's images.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def image_files(folder: Path) -> tuple[list[str], int]:
    """Every image file under ``folder``, at any depth, sorted, and how many were passed over
    as hidden: names starting with a dot, files or folders, which the Aff-Wild2 readers skip
    (they read ``<video>/%05d.jpg`` of non-hidden video folders). macOS writes an AppleDouble
    ``._00001.jpg`` beside every frame it copies to a foreign disk; undecodable, each would be
    listed as damaged."""

    def unreadable(error: OSError) -> None:  # os.walk passes over a folder it cannot list
        raise DataError(
            f"{error.filename}: cannot be listed ({error.strerror or error}); check needs to "
            "read every folder of the data set"
        )

    found, hidden = [], 0
    for parent, folders, names in os.walk(folder, onerror=unreadable):
        hidden += sum(1 for d in folders if d.startswith("."))
        folders[:] = [d for d in folders if not d.startswith(".")]
        images = [n for n in names if n.lower().endswith(IMAGE_SUFFIXES)]
        hidden += sum(1 for n in images if n.startswith("."))
        found += [os.path.join(parent, n) for n in images if not n.startswith(".")]
    return sorted(found), hidden


def _check(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from ferlit.data.images import check_image
    from ferlit.data.workers import exit_with_parent

    folders = [f for f in (args.affwild2_dir, args.expw_dir) if f is not None]
    if not folders:
        raise DataError("check needs --affwild2-dir and/or --expw-dir: there is nothing to check")
    paths: list[str] = []
    hidden = 0
    for option, folder in (("--affwild2-dir", args.affwild2_dir), ("--expw-dir", args.expw_dir)):
        if folder is None:
            continue
        if not folder.is_dir():
            raise DataError(f"{option} {folder}: folder does not exist")
        found, passed_over = image_files(folder)
        hidden += passed_over
        if not found:
            raise DataError(
                f"{option} {folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) in it"
            )
        paths += found
    workers = args.workers if args.workers is not None else (os.cpu_count() or 1)
    from ferlit.cli_values import check_workers

    check_workers("--workers", workers, 1)
    bad: list[tuple[str, str]] = []
    columns = (BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    # The bar on stderr: stdout is the list of damaged files, for scripts.
    with Progress("Decoding images", *columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("check", total=len(paths))
        pool = ProcessPoolExecutor(workers, initializer=exit_with_parent) if workers > 1 else None
        try:
            results = (
                pool.map(check_image, paths, chunksize=256) if pool else map(check_image, paths)
            )
            for path, problem in zip(paths, results, strict=True):
                if problem is not None:
                    bad.append((path, problem))
                bar.advance(task)
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
    for path, problem in bad:
        print(f"{path}: {problem}")
    print(
        f"Checked {len(paths):,} images in {', '.join(map(str, folders))}: "
        + (f"{len(bad):,} damaged (listed above)" if bad else "none damaged")
        + (
            f"; {hidden:,} hidden files or folders (names starting with '.', e.g. macOS ._ "
            "copies) passed over"
            if hidden
            else ""
        )
    )
    return 1 if bad else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ferlit.data", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)

    synth = commands.add_parser(
        "synth",
        help="write sample data (drawn faces in the Aff-Wild2 and ExpW layouts)",
        description="Write <out>/affwild2, <out>/expw and <out>/manifest.json.",
    )
    synth.add_argument("--out", type=Path, required=True, help="new or empty folder")
    synth.add_argument("--seed", type=int, default=0, help="same seed, same bytes (default 0)")
    synth.add_argument(
        "--scale", type=float, default=1.0, help="size relative to 32 videos + 300 images"
    )
    synth.set_defaults(run=_synth)

    stats = commands.add_parser(
        "stats",
        help="kept samples, class counts, skips and class weights per split",
        description="Train is Aff-Wild2 train + ExpW, val is Aff-Wild2 val (as in the paper).",
    )
    stats.add_argument("--affwild2-dir", type=Path, help="Aff-Wild2 root (omit to skip it)")
    stats.add_argument("--expw-dir", type=Path, help="ExpW root (omit to skip it)")
    stats.add_argument("--num-classes", type=int, choices=(7, 8), default=7)
    stats.add_argument("--affwild2-layout", choices=tuple(LAYOUTS), help="default: detected")
    stats.add_argument("--expw-min-confidence", type=float, help="drop ExpW faces below this")
    stats.add_argument(
        "--expw-box-overflow",
        choices=("clip", "pad"),
        help="count ExpW boxes past the image edge as clipped (default) or padded",
    )
    stats.add_argument("--json", action="store_true", help="print one JSON object")
    stats.add_argument("--plot", type=Path, help="write a bar chart of the class distributions")
    stats.add_argument("--log", action="store_true", help="log count axis in --plot")
    stats.set_defaults(run=_stats)

    pack = commands.add_parser(
        "pack",
        help="decode and resize every face once into memory-mapped arrays (data.packed_dir)",
        description="Write <out>/<part>/frames.npy and index.npz per part and <out>/manifest.json "
        "last; an interrupted pack resumes when run again with the same options.",
    )
    pack.add_argument("--affwild2-dir", type=Path, help="Aff-Wild2 root: packs train and val")
    pack.add_argument("--expw-dir", type=Path, help="ExpW root: packs its cropped faces")
    pack.add_argument("--out", type=Path, required=True, help="the pack's folder")
    pack.add_argument("--size", type=int, default=112, help="side of the faces (data.image_size)")
    pack.add_argument("--num-classes", type=int, choices=(7, 8), default=7)
    pack.add_argument("--affwild2-layout", choices=tuple(LAYOUTS), help="default: detected")
    pack.add_argument("--expw-min-confidence", type=float, help="drop ExpW faces below this")
    pack.add_argument("--expw-margin", type=float, help="as data.expw_margin (default 0)")
    pack.add_argument(
        "--expw-box-overflow",
        choices=("clip", "pad"),
        help="ExpW boxes past the image edge: clip to the image (default) or pad with black; "
        "as data.expw_box_overflow",
    )
    pack.add_argument("--workers", type=int, help="decoding processes (default: every core)")
    pack.add_argument("--index-cache-dir", type=Path, help="default: the DataModule's")
    pack.add_argument("--no-index-cache", action="store_true", help="index without the cache")
    pack.set_defaults(run=_pack)

    check = commands.add_parser(
        "check",
        help="decode every image once and list the damaged ones (exit status 1 if any)",
        description="Decode every .jpg/.jpeg/.png under the folders given (hidden names, "
        "starting with '.', passed over and counted), once, and list the "
        "missing, empty, truncated or undecodable ones with the reason; exit status 1 if any is "
        "damaged, 0 if none. Training skips damaged images (data.strict_images: false); "
        "validation and evaluation stop on them.",
    )
    check.add_argument("--affwild2-dir", type=Path, help="Aff-Wild2 root")
    check.add_argument("--expw-dir", type=Path, help="ExpW root")
    check.add_argument("--workers", type=int, help="decoding processes (default: every core)")
    check.set_defaults(run=_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status = args.run(args)
    except FerlitError as e:
        print(f"error: {user_message(e)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # stdout closed by its reader: quiet_closed_stdout ends it
        raise
    except OSError as e:
        # What the checks before the work cannot foresee (a disk that fills, a file system that
        # goes read-only, a folder removed meanwhile): the path and the reason, not a traceback.
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    return status or 0


if __name__ == "__main__":
    with quiet_closed_stdout(), data_warnings_as_lines():
        status = main()
    sys.exit(status)
