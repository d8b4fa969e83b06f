"""A run's checkpoints and records: never lost, never mixed up with another run's.

* :class:`AtomicCheckpointIO`: every checkpoint write goes through :func:`ferlit.io.atomic_write`
  (a temporary file in the checkpoint's own folder, fsync, rename). Lightning's own writer saves
  through ``fsspec``'s transaction, a temporary file in ``$TMPDIR`` moved into place: on a
  cluster whose run folder is on NFS or Lustre that move is a copy, and a kill during it left a
  0-byte ``last.ckpt`` that every requeued job then died on.
* :class:`~ferlit.training.callbacks.checkpoint.FerlitCheckpoint` (the callback that decides when
  ``last.ckpt`` and the best checkpoints are written) uses :func:`same_folder` from here.
* :class:`RunRecord`: the resolved configuration inside every checkpoint (a resume compares it
  with its own, :func:`config_differences`) and ``run_info.json`` in the run folder: how to
  reproduce the run.
* Debug runs (``fast_dev_run``, ``overfit_batches``) write no checkpoint and no summary that a
  later ``--ckpt_path last`` or ``ferlit.evaluate`` could take for a real run's
  (:func:`is_debug_run`).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import subprocess
import sys
import time
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities import rank_zero_only
from rich.console import Console

import ferlit
from ferlit.errors import ConfigError, FerlitError, user_message
from ferlit.io import atomic_write, file_kind, write_json
from ferlit.models.checkpoints import load_checkpoint, read_torch_file

#: The key of ferlit's record in a Lightning checkpoint.
CHECKPOINT_KEY = "ferlit"

#: Options a resumed run may change: how long it runs, on what hardware, how it reports, and
#: where it finds the same data. Anything else (learning rates, backbone, batch, seed,
#: validation cadence, patience, checkpoint policy...) would make the resumed run another
#: experiment: Lightning restores the optimizer's param groups, the early-stopping state and
#: the loops from the checkpoint, so a changed value would be silently ignored or mixed.
#: A key ending in "." covers everything under it.
MAY_CHANGE = (
    "ckpt_path",
    "config",
    "trainer.max_steps",
    "trainer.max_epochs",
    "trainer.max_time",
    "trainer.min_steps",
    "trainer.min_epochs",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.strategy",
    "trainer.strategy.",
    "trainer.plugins",
    "trainer.plugins.",
    "trainer.logger",
    "trainer.logger.",
    "trainer.callbacks",
    "trainer.callbacks.",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    "trainer.default_root_dir",
    "trainer.profiler",
    "data.num_workers",
    "data.pin_memory",
    "data.persistent_workers",
    "data.val_batch_size",
    "data.affwild2_dir",
    "data.expw_dir",
    "data.packed_dir",
    "data.index_cache",
    "data.index_cache_dir",
    "checkpoint.verbose",
    "checkpoint.last_every_n_steps",
)

#: Packages whose versions change what a run computes (``run_info.json``).
PACKAGES = (
    "torch",
    "lightning",
    "timm",
    "torchmetrics",
    "albumentations",
    "numpy",
    "opencv-python",
)


def is_debug_run(trainer: pl.Trainer) -> bool:
    """``fast_dev_run`` or ``overfit_batches``: a check of the code, not a run to keep."""
    return bool(trainer.fast_dev_run) or bool(getattr(trainer, "overfit_batches", 0))


def may_change(key: str) -> bool:
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in MAY_CHANGE)


def config_differences(
    saved: dict[str, Any], current: dict[str, Any], defaults: dict[str, Any] | None = None
) -> list[str]:
    """``option old -> new`` for every option that differs and may not change on resume.

    With ``defaults`` (this ferlit's option defaults, flattened), an option the checkpoint does
    not record (added to ferlit after the run started, e.g. by a ``git pull`` between two
    requeues) is no difference when the resumed run leaves it at its default: ferlit's new
    options default to the behaviour that came before them.
    """
    defaults = defaults or {}
    lines = []
    for key in sorted(set(saved) | set(current)):
        if may_change(key):
            continue
        if key not in saved and key in defaults and current.get(key) == defaults[key]:
            continue
        old, new = saved.get(key, "(unset)"), current.get(key, "(unset)")
        if old != new:
            lines.append(f"{key} {old!r} -> {new!r}")
    return lines


def same_folder(recorded: str | os.PathLike | None, folder: str | os.PathLike) -> bool:
    """Whether a folder recorded in a checkpoint (relative to the cwd of the run that wrote it,
    or absolute) is ``folder``: equal once resolved, or a relative path ``folder`` ends with."""
    if recorded is None:
        return False
    real = os.path.realpath(folder)
    if os.path.realpath(recorded) == real:
        return True
    recorded = os.path.normpath(os.fspath(recorded))
    return not os.path.isabs(recorded) and (real + os.sep).endswith(os.sep + recorded + os.sep)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local writes are crash-safe (:func:`ferlit.io.atomic_write`).

    A kill at any moment leaves the previous file whole (and at most a hidden
    ``.<name>.<pid>@<host>.*.tmp`` beside it, which the next save removes). Remote paths
    (``s3://...``) keep Lightning's writer.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with atomic_write(path) as file:
            torch.save(checkpoint, file)


def use_atomic_checkpoints(trainer: pl.Trainer) -> None:
    """Have the trainer's strategy write checkpoints with :class:`AtomicCheckpointIO`.

    Only Lightning's default writer is replaced; a writer the user configured is kept.
    """
    strategy = trainer.strategy
    current = getattr(strategy, "_checkpoint_io", None)
    if current is None or type(current) is TorchCheckpointIO:
        strategy.checkpoint_io = AtomicCheckpointIO()


def git_commit(folder: Path) -> dict[str, Any] | None:
    """The commit of the git work tree ``folder`` is in (and whether it has changes), or None.

    None too when ``folder``'s ``__init__.py`` is not tracked there: ferlit installed into a
    virtual environment inside another project's repository is not at that project's commit.
    Each git call may take 5 seconds at most (a hung network file system does not stall the run).
    """

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        command = ["git", "-C", str(folder), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=5)

    try:
        if git("ls-files", "--error-unmatch", "__init__.py").returncode != 0:
            return None
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return None
        status = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head.stdout.strip(), "modified": bool(status.stdout.strip())}


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def data_folders(datamodule: Any) -> dict[str, str | None]:
    """The data folders the run reads, resolved (the sample data's when none is configured)."""
    if datamodule is None or not hasattr(datamodule, "hparams"):
        return {}
    hp = datamodule.hparams
    folders = {key: hp.get(key) for key in ("affwild2_dir", "expw_dir", "packed_dir")}
    if getattr(datamodule, "uses_sample_data", False):
        affwild2, expw = datamodule.source_dirs()
        folders.update(affwild2_dir=str(affwild2), expw_dir=str(expw), sample_data=True)
    return {k: os.path.realpath(v) if isinstance(v, str) else v for k, v in folders.items()}


class RunRecord(pl.Callback):
    """Puts the run's resolved configuration in every checkpoint, and writes ``run_info.json``.

    ``run_info.json`` (beside ``config.yaml``) lists every start of the run, a resume being
    another start: ferlit's version and git commit, the package versions, the resolved data
    folders, the working directory and the command line. It is rewritten crash-safely.
    """

    def __init__(self, config: dict[str, Any], argv: list[str], folder: str | None = None) -> None:
        self.config = config
        self.argv = argv
        self.folder = folder
        self.resumed_from: str | None = None

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        record = checkpoint.setdefault(CHECKPOINT_KEY, {})  # shared with the module's entries
        record.update(version=ferlit.__version__, config=self.config)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from ferlit.training.callbacks.wandb_logging import find_wandb_logger, run_dir

        wandb = find_wandb_logger(trainer)
        folder = self.folder or (run_dir(wandb) if wandb is not None else trainer.log_dir)
        if folder is None or is_debug_run(trainer) or not trainer.is_global_zero:
            return
        self.write(Path(folder), trainer)

    @rank_zero_only
    def write(self, folder: Path, trainer: pl.Trainer) -> None:
        package = Path(ferlit.__file__).resolve().parent
        start = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "ferlit": ferlit.__version__,
            "git": git_commit(package),
            "python": platform.python_version(),
            "packages": package_versions(),
            "data": data_folders(trainer.datamodule),
            "cwd": os.getcwd(),
            "argv": [sys.executable, "-m", "ferlit.fit", *self.argv],
            "resumed_from": self.resumed_from,
        }
        path = folder / "run_info.json"
        starts = []
        if path.is_file():
            try:
                starts = json.loads(path.read_text())["starts"]
            except (ValueError, KeyError, TypeError):
                starts = []
        folder.mkdir(parents=True, exist_ok=True)
        write_json(path, {"starts": [*starts, start]})


# -- resuming a run -----------------------------------------------------------------------------


def read_checkpoint_file(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint given to ``--ckpt_path``, read and checked before training starts.

    Every read of such a file goes through here, and through
    ``ferlit.models.checkpoints.load_checkpoint``: ``weights_only=True``, so that a
    booby-trapped file is refused before any of its code runs. A 0-byte or truncated file (a write cut short by a kill, with Lightning's own writer) or a file that
    is not a checkpoint of ``python -m ferlit.fit`` is refused, naming the file.
    """
    path = Path(path)
    if path.stat().st_size == 0:
        raise ConfigError(
            f"--ckpt_path {path}: empty file (0 bytes), a checkpoint write cut short; give an "
            "earlier checkpoint of the run (its best-*.ckpt), or delete it to start over"
        )
    try:
        saved = load_checkpoint(path, mmap=True)
    except FerlitError as error:
        raise ConfigError(f"--ckpt_path: {user_message(error)}") from None
    except Exception as error:  # a truncated zip, a foreign pickle: any of torch's errors
        raise ConfigError(
            f"--ckpt_path {path}: not a readable PyTorch checkpoint ({type(error).__name__}: "
            f"{str(error).strip().splitlines()[0] if str(error).strip() else 'no detail'}); "
            "the file is damaged or truncated, give an earlier checkpoint of the run"
        ) from None
    missing = [
        k
        for k in ("state_dict", "loops", "callbacks")
        if not isinstance(saved, dict) or k not in saved
    ]
    if missing:
        raise ConfigError(
            f"--ckpt_path {path}: not a training checkpoint of python -m ferlit.fit (no "
            f"{', '.join(missing)}); to start a new run from its weights use --model.pretrained"
        )
    return saved


def check_same_experiment(
    path: str | os.PathLike,
    saved: dict[str, Any],
    config: dict | None,
    defaults: dict[str, Any] | None = None,
) -> None:
    """Refuse to resume a checkpoint into another experiment (``ferlit.training.runs.MAY_CHANGE``)."""
    record = saved.get(CHECKPOINT_KEY)
    if config is None:
        return
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
        Console(stderr=True).print(
            f"--ckpt_path {path}: written by a ferlit that did not record its options; "
            "they cannot be compared with this run's"
        )
        return
    differences = config_differences(record["config"], config, defaults)
    if differences:
        raise ConfigError(
            f"--ckpt_path {path}: written by another experiment; options that differ: "
            + "; ".join(differences)
            + ". Resume with the checkpoint's options, or start a new run in its own folder "
            "(another --trainer.logger.name or --trainer.logger.save_dir); to start from its "
            "weights use --model.pretrained"
        )


def newest_of_this_experiment(
    found: list[Path], config: dict[str, Any] | None, defaults: dict[str, Any] | None
) -> Path:
    """``--ckpt_path last`` among several ``last*.ckpt`` (a logger folder holding two experiments'
    versions): the newest one this run's options may resume, else the newest (whose check then
    refuses it, listing the differences). A file that cannot be read is taken as it is, so that
    the error names it rather than an older one being resumed past it."""
    newest_first = sorted(found, key=lambda f: f.stat().st_mtime, reverse=True)
    if config is None or len(newest_first) == 1:
        return newest_first[0]
    for candidate in newest_first:
        try:
            record = read_checkpoint_file(candidate).get(CHECKPOINT_KEY)
        except (ConfigError, OSError):
            return candidate
        saved = record.get("config") if isinstance(record, dict) else None
        if not isinstance(saved, dict) or not config_differences(saved, config, defaults):
            return candidate
    return newest_first[0]


def _missing_parents(folder: Path) -> list[Path]:
    """``folder`` and its parents up to the first that exists: what ``os.makedirs`` would make."""
    made = []
    while not folder.exists() and folder.parent != folder:
        made.append(folder)
        folder = folder.parent
    return made


class RunFolders:
    """The run's folders as they were before a fit made any (:func:`run_folders_before`)."""

    def __init__(self, trainer: pl.Trainer, missing: set[Path], entries: dict[Path, frozenset]):
        self.trainer = trainer
        self.missing = missing  # run folders (and parents) not there yet: this run makes them
        self.entries = entries  # what each existing logger root_dir held: older version_N


def _logger_root_dirs(trainer: pl.Trainer) -> list[tuple[CSVLogger | TensorBoardLogger, Path]]:
    """The loggers that make ``<root_dir>/version_N`` folders, with that ``root_dir``."""
    return [
        (logger, Path(os.path.abspath(logger.root_dir)))
        for logger in trainer.loggers
        if isinstance(logger, CSVLogger | TensorBoardLogger) and logger.root_dir
    ]


def run_folders_before(trainer: pl.Trainer) -> RunFolders:
    """The run's folders before a fit makes any: ``trainer.default_root_dir``, the
    ``checkpoint.dirpath`` set, each logger's ``save_dir`` and the ``<save_dir>/<name>`` that
    holds its ``version_N`` folders; which are missing (with the parents ``os.makedirs`` will
    make), and the entries each existing ``<save_dir>/<name>`` holds now.
    :func:`remove_new_empty_folders` reads it after a refusal."""
    folders: list[str | None] = [trainer.default_root_dir]
    callback = trainer.checkpoint_callback
    if isinstance(callback, ModelCheckpoint):
        folders.append(callback.dirpath)
    folders += [logger.save_dir for logger in trainer.loggers]
    missing: set[Path] = set()
    for folder in folders:
        if folder:
            missing.update(_missing_parents(Path(os.path.abspath(folder))))
    entries: dict[Path, frozenset] = {}
    for _, root in _logger_root_dirs(trainer):
        missing.update(_missing_parents(root))
        if root.is_dir():
            try:
                entries[root] = frozenset(os.listdir(root))
            except OSError:  # unreadable: its version folders are not touched
                missing.discard(root)
    return RunFolders(trainer, missing, entries)


def remove_new_empty_folders(before: RunFolders | None) -> None:
    """After a refused fit (e.g. a ConfigError from the data's setup, once the logger made
    ``version_N``), remove the folders this run made that are still empty: its logger's own
    ``version_N`` (a name its ``<save_dir>/<name>`` did not hold before), then the run folders
    :func:`run_folders_before` found missing, deepest first. Each is removed only if empty
    (``os.rmdir``), never with what is in it, and nothing else is touched: an empty folder that
    appeared meanwhile beside them (a concurrent run's ``version_M`` while it reads its data, a
    user's) is not this run's. A dead empty ``version_N`` would make the next run
    ``version_N+1``; a user's file or folder is never touched."""
    if before is None:
        return
    made = set(before.missing)
    for logger, root in _logger_root_dirs(before.trainer):
        if root not in made and root not in before.entries:
            continue  # unreadable before
        try:
            log_dir = Path(os.path.abspath(logger.log_dir))
        except OSError:
            continue
        if log_dir.parent == root and log_dir.name not in before.entries.get(root, ()):
            made.add(log_dir)
    for folder in sorted(made, key=lambda f: -len(f.parts)):
        if not folder.is_symlink():
            with contextlib.suppress(OSError):
                os.rmdir(folder)  # only an empty folder


def continue_logger_version(trainer: pl.Trainer, folder: Path) -> None:
    """Log a resumed run into the version folder of the checkpoint it resumes.

    A checkpoint in ``<save_dir>/<name>/version_N/checkpoints`` of this run's (CSV or
    TensorBoard) logger continues in ``version_N``: one folder holds the run's config,
    ``metrics.csv``, checkpoints and ``best_validation.json`` after any number of resumes.
    Lightning's CSV writer deletes an existing ``metrics.csv`` when it starts, so the file is
    moved aside while the writer is created and then appended to.
    """
    logger = trainer.loggers[0] if trainer.loggers else None
    if not isinstance(logger, CSVLogger | TensorBoardLogger) or folder.name != "checkpoints":
        return
    version_dir = folder.parent
    root = Path(
        os.path.realpath(Path(logger.save_dir or trainer.default_root_dir) / str(logger.name))
    )
    if version_dir.parent != root:
        # The same logger name under another save_dir: a relative save_dir (the shipped
        # configs' "runs") resolved from another working directory. The run's logs stay with
        # its checkpoints, not in a new version folder under this cwd.
        if not logger.name or version_dir.parent.name != str(logger.name):
            return  # another logger name: the user chose to log elsewhere
        save_dir = str(version_dir.parent.parent)
        if rank_zero_only.rank == 0:
            print(
                f"resuming in the run's own folder {version_dir} (trainer.logger.save_dir "
                f"{logger.save_dir} from {os.getcwd()} is another folder)",
                file=sys.stderr,
            )
        logger._root_dir = save_dir  # Lightning's CSV and TensorBoard loggers keep it there
        if isinstance(logger, CSVLogger):
            logger._save_dir = save_dir
    number = re.fullmatch(r"version_(\d+)", version_dir.name)
    logger._version = int(number[1]) if number else version_dir.name
    for callback in trainer.callbacks:
        if isinstance(callback, SaveConfigCallback):
            callback.overwrite = True  # the run's config.yaml, checked equal but for MAY_CHANGE
    metrics = version_dir / "metrics.csv"
    if isinstance(logger, CSVLogger) and rank_zero_only.rank == 0 and metrics.is_file():
        aside = version_dir / ".metrics.csv.resumed"
        os.replace(metrics, aside)
        try:
            with warnings.catch_warnings():  # "...will be deleted": not so, it is appended to
                warnings.filterwarnings("ignore", message="Experiment logs directory")
                writer = logger.experiment
        finally:
            os.replace(aside, metrics)
        with open(metrics, newline="") as f:
            header = f.readline().strip()
        writer.metrics_keys = header.split(",") if header else []


def resume_checkpoint(
    trainer: pl.Trainer,
    ckpt_path: str | None,
    config: dict[str, Any] | None = None,
    defaults: dict[str, Any] | None = None,
) -> str | None:
    """The checkpoint ``--ckpt_path`` names, checked, with ``last`` found across the run's versions.

    Lightning looks for ``last`` only in the checkpoint folder of the *new* logger version, which
    never holds one, and would silently start over. ferlit takes the newest ``last*.ckpt`` in
    the checkpoint folder set by ``checkpoint.dirpath``, else in every version of the logger's
    folder, of this run's experiment where several are there (:func:`newest_of_this_experiment`). The file is read first (:func:`read_checkpoint_file`) and, with ``config`` (the
    run's flattened options), refused if another experiment wrote it. A resumed run continues
    in the folders of the checkpoint it resumes, whatever the working directory and whether
    ``save_dir`` is relative: checkpoints beside it (``ModelCheckpoint`` drops its best score
    and top-k list when the folder changes) and logs in its ``version_N``.

    Lightning's other names: ``best`` (a new fit has no best checkpoint yet) is refused;
    ``hpc``, and no checkpoint at all under SLURM (where Lightning itself takes the newest
    ``hpc_ckpt_N.ckpt`` of ``trainer.default_root_dir``, its requeue checkpoint), become that
    file, checked like any other: Lightning would resume it whichever experiment wrote it.
    """
    if ckpt_path == "best":
        raise ConfigError(
            "--ckpt_path best: a new fit has no best checkpoint yet; give the checkpoint file "
            "(<save_dir>/<name>/version_N/checkpoints/best-*.ckpt) or 'last'"
        )
    callback = trainer.checkpoint_callback
    callback = callback if isinstance(callback, ModelCheckpoint) else None
    if ckpt_path == "last":
        if callback is not None and callback.dirpath is not None:
            folders = [Path(callback.dirpath)]
        else:
            folders = [Path(trainer.default_root_dir) / "checkpoints"]
            if trainer.loggers:
                logger = trainer.loggers[0]
                root = Path(logger.save_dir or ".") / str(logger.name)
                folders += sorted(root.glob("*/checkpoints"))
        found = [f for folder in folders for f in folder.glob("last*.ckpt")]
        if found:
            ckpt_path = str(newest_of_this_experiment(found, config, defaults))
        elif (hpc := trainer._checkpoint_connector._hpc_resume_path) and SLURMEnvironment.detect():
            ckpt_path = hpc
        else:
            Console(stderr=True).print(
                f"--ckpt_path last: no last.ckpt in {', '.join(map(str, folders)) or 'any run folder'}"
                " yet: starting a new run"
            )
            return None
    elif ckpt_path in (None, "hpc"):
        hpc = trainer._checkpoint_connector._hpc_resume_path
        if ckpt_path == "hpc" and hpc is None:
            raise ConfigError(
                f"--ckpt_path hpc: no hpc_ckpt_N.ckpt (Lightning's SLURM requeue checkpoint) in "
                f"trainer.default_root_dir {trainer.default_root_dir}"
            )
        if hpc is None or (ckpt_path is None and not SLURMEnvironment.detect()):
            return None
        ckpt_path = hpc
    elif not Path(ckpt_path).is_file():
        raise ConfigError(f"--ckpt_path: no checkpoint file {ckpt_path}")
    saved = read_checkpoint_file(ckpt_path)
    check_same_experiment(ckpt_path, saved, config, defaults)
    folder = Path(os.path.realpath(Path(ckpt_path).parent))
    if callback is not None and callback.dirpath is None:
        states = saved.get("callbacks", {}).values()
        if any(isinstance(s, dict) and same_folder(s.get("dirpath"), folder) for s in states):
            continue_logger_version(trainer, folder)
            callback.dirpath = str(folder)
    for record in trainer.callbacks:
        if isinstance(record, RunRecord):
            record.resumed_from = os.path.abspath(ckpt_path)
    return ckpt_path


# -- the checkpoint a run folder names ------------------------------------------------------


def _recorded_best(folder: Path) -> Path | None:
    """The best checkpoint a run folder's own records name: the ``best_model_path`` in its
    newest ``last*.ckpt`` (rewritten after every validation), else in ``best_validation.json``
    (written when the run ends or stops). A recorded path relative to another working
    directory is looked up by name beside the record."""
    records = sorted(
        [*folder.glob("last*.ckpt"), *folder.glob("best_validation.json")],
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for record in records:
        try:
            if record.suffix == ".json":
                recorded = json.loads(record.read_text()).get("checkpoint")
            else:  # plain types only: nothing in the file can run code
                state = read_torch_file(record, mmap=True)
                recorded = next(  # ferlit's FerlitCheckpoint, or Lightning's ModelCheckpoint
                    (
                        s.get("best_model_path")
                        for s in state.get("callbacks", {}).values()
                        if isinstance(s, dict) and "best_model_path" in s
                    ),
                    None,
                )
        except Exception:  # a damaged or foreign record says nothing: try the next
            continue
        if not recorded:
            continue
        for candidate in (Path(recorded), record.parent / Path(recorded).name):
            if candidate.is_file():
                return candidate
    return None


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint file, or the best checkpoint of a run's log folder.

    The folder is a logger folder (``runs/sample``, all its ``version_N``), one version, or a
    checkpoint folder. The best checkpoint is the one the run recorded as best
    (:func:`_recorded_best`, newest record first), so a resumed run whose parts wrote into
    several versions still gives its true best; failing a record, the folder's only
    ``best-*.ckpt`` of the newest version that has one; several without a record are ambiguous
    and refused rather than one picked by name or date.
    """
    path = Path(path)
    if path.is_file():
        return path
    if os.path.lexists(path) and not path.is_dir():  # a FIFO (it would block), a dangling link
        raise ConfigError(f"--ckpt_path {path}: is {file_kind(path)}; expected a checkpoint file")
    if not path.is_dir():
        raise ConfigError(
            f"--ckpt_path {path}: no such file or folder; expected a checkpoint of python -m ferlit.fit "
            "(e.g. runs/sample/version_0/checkpoints/best-....ckpt) or its log folder (runs/sample)"
        )
    versions = [p for p in path.glob("version_*") if re.fullmatch(r"version_\d+", p.name)]
    versions.sort(key=lambda p: int(p.name.split("_")[1]), reverse=True)
    folders = [v / "checkpoints" for v in versions] + [path / "checkpoints", path]
    folders = [f for f in folders if f.is_dir()]
    newest_first = sorted(
        folders,
        key=lambda f: max((p.stat().st_mtime for p in f.glob("*.ckpt")), default=0.0),
        reverse=True,
    )
    for folder in newest_first:
        best = _recorded_best(folder)
        if best is not None:
            return best
    newest = next((f for f in folders if any(f.glob("best-*.ckpt"))), path / "checkpoints")
    best = sorted(newest.glob("best-*.ckpt"))
    if len(best) != 1:
        found = ", ".join(p.name for p in best) if best else "none"
        raise ConfigError(
            f"--ckpt_path {path}: expected one best-*.ckpt in {newest} (or a last.ckpt or "
            f"best_validation.json naming it), found {found}; give the checkpoint file itself"
        )
    return best[0]
