"""``python -m ferlit.data synth|stats|pack|check``: write the sample data; count what a run would
use; pack the faces into memory-mapped arrays for fast loading; find damaged images.

One command-line style with ``python -m ferlit.fit`` (jsonargparse): a data option is named as
fit names it, ``--data.<name>`` (an ``ExpressionDataModule`` argument), and ``--config FILE`` takes
the same experiment YAML as fit, of which the ``data:`` section is used. Each command takes only
the data options it uses (``DATA_OPTIONS``); any other ``--data.<name>``, and the spellings of the
argparse commands before it (``--affwild2-dir``, ``--size``, ...: ``RENAMED``), are refused with a
message naming the option to use.

Bad input (a missing folder, a malformed annotation line) prints ``error: <message>`` naming the
file or option and exits with status 2, like a usage error, without a traceback. ``check`` exits
with status 1 when it found damaged images, 0 when it found none.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import ActionConfigFile, ArgumentParser, Namespace

from ferlit.cli_values import PARSER_MODE
from ferlit.data.datamodule import ExpressionDataModule
from ferlit.data.sample import write_sample_data
from ferlit.errors import (
    ConfigError,
    DataError,
    FerlitError,
    data_warnings_as_lines,
    quiet_closed_stdout,
    user_message,
)
from ferlit.expressions import check_num_classes

#: Every ExpressionDataModule argument: the names ``--data.<name>`` and a ``data:`` section use.
DATAMODULE_OPTIONS = tuple(
    name
    for name in inspect.signature(ExpressionDataModule.__init__).parameters
    if name != "self" and not name.startswith("_")  # private: no command-line option
)
#: The data options each command uses, as ``--data.<name>``; any other is refused, never ignored.
DATA_OPTIONS: dict[str, tuple[str, ...]] = {
    "stats": (
        "affwild2_dir",
        "expw_dir",
        "num_classes",
        "affwild2_layout",
        "expw_min_confidence",
        "expw_box_overflow",
    ),
    "pack": (
        "affwild2_dir",
        "expw_dir",
        "image_size",
        "num_classes",
        "affwild2_layout",
        "expw_min_confidence",
        "expw_margin",
        "expw_box_overflow",
        "index_cache",
        "index_cache_dir",
    ),
    "check": ("affwild2_dir", "expw_dir"),
}
#: The ExpW options: given without ``--data.expw_dir`` they would do nothing, so are refused.
EXPW_OPTIONS = ("expw_min_confidence", "expw_margin", "expw_box_overflow")
#: The argparse spellings of stats, pack and check before the data options were named as fit
#: names them (issue 14): refused, naming the option that replaced each.
RENAMED = {
    "--affwild2-dir": "--data.affwild2_dir",
    "--expw-dir": "--data.expw_dir",
    "--num-classes": "--data.num_classes",
    "--affwild2-layout": "--data.affwild2_layout",
    "--expw-min-confidence": "--data.expw_min_confidence",
    "--expw-margin": "--data.expw_margin",
    "--expw-box-overflow": "--data.expw_box_overflow",
    "--size": "--data.image_size",
    "--index-cache-dir": "--data.index_cache_dir",
    "--no-index-cache": "--data.index_cache false",
}
#: Per command, the help of a data option whose DataModule docstring (written for training)
#: says something else than what the command does with it.
HELP = {
    "stats": {
        "affwild2_dir": "Aff-Wild2 root: its train and val splits are counted (omit to skip it)",
        "expw_dir": "ExpW root: its faces are counted with the training set (omit to skip it)",
    },
    "pack": {
        "affwild2_dir": "Aff-Wild2 root: its train and val splits are packed (omit to skip it)",
        "expw_dir": "ExpW root: its cropped faces are packed (omit to skip it)",
        "image_size": "side of the packed faces in pixels; a run reading the pack must use the "
        "same data.image_size (fit links it to model.input_size; 112, the challenge's "
        "cropped_aligned faces)",
    },
    "check": {
        "affwild2_dir": "Aff-Wild2 root: every image under it is decoded (omit to skip it)",
        "expw_dir": "ExpW root: every image under it is decoded (omit to skip it)",
    },
}
CONFIG_HELP = (
    "an experiment YAML, as given to python -m ferlit.fit --config (e.g. "
    "experiments/cafarelli2020.yaml) and read by fit's parser: the --data.* options of this "
    "command are taken from its data (data.image_size from model.input_size, as fit links "
    "them); its other data options (batch size, augmentation, ...) and other sections (model, "
    "trainer, ...) concern training and are passed over. Options after --config override it"
)


def experiment_data(path: str | os.PathLike, used: tuple[str, ...]) -> dict[str, Any]:
    """``{"data": {...}}``: the options in ``used`` that an experiment file sets (to other than
    their defaults), as ``python -m ferlit.fit --config FILE`` resolves it, with ``image_size``
    from ``model.input_size`` as fit links them.

    The file is read by fit's own parser (``--print_config=skip_default``), so its composition
    (a parent ``config:``, groups given as file names, dotted keys) reads as fit reads it, and a
    file fit refuses (a key that is no option, a value of the wrong type) is refused here with
    fit's message and exit status 2."""
    from ferlit.cli import stage_arguments_given
    from ferlit.fit import main as fit

    stage_arguments_given()  # fit is given the file while sys.argv holds this command's line
    path = Path(path)
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "no such file"
        raise ConfigError(f"--config {path}: {what}; expected an experiment YAML file")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        try:
            fit(["--config", str(path), "--print_config=skip_default"])
        except SystemExit as stop:
            if stop.code:  # fit's parser printed its error
                raise
    experiment = yaml.safe_load(printed.getvalue()) or {}
    data = {k: v for k, v in (experiment.get("data") or {}).items() if k in used}
    input_size = (experiment.get("model") or {}).get("input_size")
    if "image_size" in used and input_size is not None and "image_size" not in data:
        data["image_size"] = input_size
    return {"data": data}


class ExperimentFile(ActionConfigFile):
    """``--config FILE``: the data options of an experiment file (``experiment_data``)."""

    def __call__(self, parser, cfg, values, option_string=None) -> None:
        used = tuple(a.dest.split(".", 1)[1] for a in parser._actions if a.dest.startswith("data."))
        self.apply_config(parser, cfg, self.dest, yaml.safe_dump(experiment_data(values, used)))


def _given(data: Namespace, argv: list[str]) -> set[str]:
    """The data options given: on the command line, or by a file (``--config``, ``--data``) with
    another value than their default (nothing else tells a default from a value given)."""
    parameters = inspect.signature(ExpressionDataModule.__init__).parameters
    tokens = {a.split("=", 1)[0] for a in argv}
    return {
        name
        for name, value in vars(data).items()
        if f"--data.{name}" in tokens or value != parameters[name].default
    }


def _refuse_expw_options_without_expw(data: Namespace, given: set[str]) -> None:
    """An ExpW option given (on the command line or in --config) without ``--data.expw_dir``
    would be accepted and do nothing: refused."""
    if data.expw_dir is not None:
        return
    for name in EXPW_OPTIONS:
        if name in given:
            raise ConfigError(
                f"--data.{name}: only used with --data.expw_dir (no ExpW folder given)"
            )


def _folder(option: str, folder: str | None) -> Path | None:
    """``folder`` as a Path, refused when given and not a folder."""
    if folder is None:
        return None
    if not Path(folder).is_dir():
        raise DataError(f"{option} {folder}: folder does not exist")
    return Path(folder)


def _synth(args: Namespace, given: set[str]) -> None:
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


def _stats(args: Namespace, given: set[str]) -> None:
    data = args.data
    from ferlit.data.stats import check_plot_path, dataset_stats, plot_stats, print_stats

    if args.plot is not None:
        check_plot_path(args.plot)  # before indexing, which takes minutes at full scale
    if data.affwild2_dir is None and data.expw_dir is None:  # as fit does: the sample data
        from rich.console import Console

        from ferlit.data.sample import default_sample_dir, ensure_sample_data

        Console(stderr=True).print(
            f"[bold]No data given[/]: counting ferlit's sample data at {default_sample_dir()} "
            "(drawn faces, not Aff-Wild2; set --data.affwild2_dir / --data.expw_dir for real "
            "data)",
            soft_wrap=True,
        )
        sample = ensure_sample_data(progress=not args.json)
        data.affwild2_dir, data.expw_dir = str(sample.affwild2_dir), str(sample.expw_dir)
    else:
        sample = None
    _refuse_expw_options_without_expw(data, given)
    affwild2_dir = _folder("--data.affwild2_dir", data.affwild2_dir)
    expw_dir = _folder("--data.expw_dir", data.expw_dir)
    stats = dataset_stats(
        affwild2_dir,
        expw_dir,
        num_classes=data.num_classes,
        affwild2_layout=data.affwild2_layout,
        expw_min_confidence=data.expw_min_confidence,
        progress=not args.json,
        expw_box_overflow=data.expw_box_overflow,
    )
    if sample is not None:  # the JSON and the plot say the counts are of drawn faces
        stats["sample_data"] = str(sample.root)
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        print_stats(stats)
    if args.plot is not None:
        plot_stats(stats, args.plot, log=args.log)
        if not args.json:
            print(f"Class distribution plotted to {args.plot}")


def _pack(args: Namespace, given: set[str]) -> None:
    data = args.data
    _refuse_expw_options_without_expw(data, given)
    from ferlit.data.pack import pack  # imports torch: slow

    result = pack(
        Path(args.out),
        data.affwild2_dir,
        data.expw_dir,
        size=data.image_size,
        num_classes=data.num_classes,
        layout=data.affwild2_layout,
        expw_min_confidence=data.expw_min_confidence,
        expw_margin=data.expw_margin,
        expw_box_overflow=data.expw_box_overflow,
        workers=args.workers,
        index_cache=data.index_cache,
        index_cache_dir=data.index_cache_dir,
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


def _check(args: Namespace, given: set[str]) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from ferlit.data.images import check_image
    from ferlit.data.workers import exit_with_parent

    data = args.data
    options = (("--data.affwild2_dir", data.affwild2_dir), ("--data.expw_dir", data.expw_dir))
    folders = [Path(f) for _, f in options if f is not None]
    if not folders:
        raise DataError(
            "check needs --data.affwild2_dir and/or --data.expw_dir: there is nothing to check"
        )
    paths: list[str] = []
    hidden = 0
    for option, given_folder in options:
        folder = _folder(option, given_folder)
        if folder is None:
            continue
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


def _data_arguments(parser: ArgumentParser, command: str) -> None:
    """The DataModule options ``command`` uses, as ``--data.<name>`` with their docstring help
    (or the command's own, ``HELP``), and ``--config FILE``."""
    used = DATA_OPTIONS[command]
    parser.add_class_arguments(
        ExpressionDataModule,
        "data",
        skip=set(DATAMODULE_OPTIONS) - set(used),
        sub_configs=False,
    )
    for action in parser._actions:
        name = action.dest.split(".", 1)[1] if action.dest.startswith("data.") else None
        if name in HELP[command]:
            action.help = HELP[command][name]
        elif action.dest == "data":
            action.help = (
                "a YAML file (or string) of the data options below, keys without data. (an "
                "experiment file goes to --config)"
            )
    parser.add_argument("--config", action=ExperimentFile, help=CONFIG_HELP)


def _workers_argument(parser: ArgumentParser) -> None:
    parser.add_argument(
        "--workers",
        type=int | None,
        default=None,
        help="decoding processes (default: every core; at most 8 per core)",
    )


def build_parser() -> ArgumentParser:
    # allow_abbrev: options matched whole (a unique prefix would stand for an option unseen)
    parser = ArgumentParser(
        prog="python -m ferlit.data",
        description=__doc__.split("\n\n")[0],
        allow_abbrev=False,
        parser_mode=PARSER_MODE,
    )
    commands = parser.add_subcommands(dest="command")

    synth = ArgumentParser(
        allow_abbrev=False,
        parser_mode=PARSER_MODE,
        description="Write <out>/affwild2, <out>/expw and <out>/manifest.json.",
    )
    synth.add_argument("--out", type=str, required=True, help="a new or empty folder")
    synth.add_argument("--seed", type=int, default=0, help="same seed, same bytes")
    synth.add_argument(
        "--scale", type=float, default=1.0, help="size relative to 32 videos + 300 images"
    )
    commands.add_subcommand(
        "synth", synth, help="write sample data (drawn faces in the Aff-Wild2 and ExpW layouts)"
    )

    stats = ArgumentParser(
        allow_abbrev=False,
        parser_mode=PARSER_MODE,
        description="Train is Aff-Wild2 train + ExpW, val is Aff-Wild2 val (as in the paper).",
    )
    _data_arguments(stats, "stats")
    stats.add_argument("--json", action="store_true", help="print one JSON object")
    stats.add_argument(
        "--plot", type=str | None, default=None, help="write a bar chart of the class distributions"
    )
    stats.add_argument("--log", action="store_true", help="log count axis in --plot")
    commands.add_subcommand(
        "stats", stats, help="kept samples, class counts, skips and class weights per split"
    )

    pack = ArgumentParser(
        allow_abbrev=False,
        parser_mode=PARSER_MODE,
        description="Write <out>/<part>/frames.npy and index.npz per part and <out>/manifest.json "
        "last; an interrupted pack resumes when run again with the same options.",
    )
    _data_arguments(pack, "pack")
    pack.add_argument("--out", type=str, required=True, help="the pack's folder")
    _workers_argument(pack)
    commands.add_subcommand(
        "pack",
        pack,
        help="decode and resize every face once into memory-mapped arrays (data.packed_dir)",
    )

    check = ArgumentParser(
        allow_abbrev=False,
        parser_mode=PARSER_MODE,
        description="Decode every .jpg/.jpeg/.png under the folders given (hidden names, "
        "starting with '.', passed over and counted), once, and list the "
        "missing, empty, truncated or undecodable ones with the reason; exit status 1 if any is "
        "damaged, 0 if none. Training skips damaged images (data.strict_images: false); "
        "validation and evaluation stop on them.",
    )
    _data_arguments(check, "check")
    _workers_argument(check)
    commands.add_subcommand(
        "check",
        check,
        help="decode every image once and list the damaged ones (exit status 1 if any)",
    )
    return parser


def refused_spelling(argv: list[str]) -> str | None:
    """Why an option of ``argv`` is refused before parsing, or None: an argparse spelling of
    before issue 14 (``RENAMED``) or a data option the command does not use."""
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in DATA_OPTIONS:
        return None
    used = DATA_OPTIONS[command]
    for token in argv:
        name = token.split("=", 1)[0]
        if name in RENAMED:
            return f"{name}: now {RENAMED[name]}"
        key = name.removeprefix("--data.")
        if name.startswith("--data.") and key in DATAMODULE_OPTIONS and key not in used:
            return (
                f"{name}: not used by {command}, which takes "
                f"{', '.join('--data.' + o for o in used)}"
            )
    return None


RUN = {"synth": _synth, "stats": _stats, "pack": _pack, "check": _check}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        refused = refused_spelling(argv)
        if refused is not None:
            raise ConfigError(refused)
        parser = build_parser()
        config = parser.parse_args(argv)
        command = config.command
        data = config[command].get("data")
        # A usage error (exit status 2 before anything is read), as argparse's choices made it.
        if data is not None:
            try:
                check_num_classes("--data.num_classes", data.get("num_classes", 7))
            except ConfigError as e:
                parser.error(str(e))
        given = set() if data is None else _given(data, argv)
        status = RUN[command](config[command], given)
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
