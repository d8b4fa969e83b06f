"""The DataModule: Aff-Wild2 train (+ ExpW, + any reader of one's own) for training, Aff-Wild2
val for validation, and the faces to predict.

Cafarelli et al. train on Aff-Wild2 train merged with ExpW and validate on Aff-Wild2 val, with
a class-weighted cross entropy whose weights are count(most common class) / count(c).

This is the one place that decides where faces come from: it builds the readers
(``ferlit.data.readers.base.create_reader``), reads their indexes through the cache
(``ferlit.data.cache``) or a pack (``ferlit.data.pack``), and hands each stage its loaders.
Everything else (stats, pack, the prediction writer) asks it: ``part_names``/``part`` for the
parts of a stage, ``predict_index`` and ``predict_dataloader`` for prediction.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, get_args

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset

from ferlit.cli_values import check_number, check_workers
from ferlit.data.cache import cached_index
from ferlit.data.datasets import EpochSeededDataset, FaceDataset, PackedFaceDataset
from ferlit.data.device_augment import AugmentationPlan, DeviceAugmentation
from ferlit.data.images import BoxOverflow, check_box_overflow
from ferlit.data.index import FrameIndex
from ferlit.data.pack import Pack, check_pack_sources
from ferlit.data.readers.affwild2 import (
    AffWild2Reader,
    split_overlap_message,
    videos_in_both_splits,
)
from ferlit.data.readers.base import Reader, create_reader
from ferlit.data.readers.frames_dir import FramesDirReader
from ferlit.data.samplers import EpochShuffleSampler, ResumableLoader, ShardSampler
from ferlit.data.subsample import subsample
from ferlit.data.transforms import Augmentation, build_transform
from ferlit.data.workers import exit_with_parent
from ferlit.errors import ConfigError, DataError, DataWarning
from ferlit.expressions import check_num_classes, class_names

ClassWeighting = Literal["inverse_frequency", "sqrt_inverse_frequency", "none"]


def class_weights_from_counts(
    counts: Sequence[int], scheme: ClassWeighting = "inverse_frequency"
) -> list[float]:
    """Per-class loss weights from training-set counts.

    ``inverse_frequency`` is the paper's: count(most common class) / count(c), which gave
    (1, 22.92, 37.5, 50.66, 3.47, 5.79, 13.55) on Aff-Wild2 train + ExpW. ``sqrt_...`` is its
    square root, a milder option for sweeps; ``none`` weights every class 1. A class with no
    training sample cannot be weighted by frequency: that is an error, not an infinite weight.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if scheme == "none":
        return [1.0] * len(counts)
    if (counts <= 0).any():
        missing = [class_names(len(counts))[c] for c in np.flatnonzero(counts <= 0)]
        raise DataError(
            f"the training set has no sample of {', '.join(missing)}: class weights "
            f"'{scheme}' need every class (give data.class_weighting explicitly, or 'none')"
        )
    weights = counts.max() / counts
    if scheme == "sqrt_inverse_frequency":
        weights = np.sqrt(weights)
    elif scheme != "inverse_frequency":
        raise ConfigError(f"data.class_weighting: unknown scheme {scheme!r}")
    return weights.tolist()


def expw_summary(index: FrameIndex, box_overflow: BoxOverflow) -> str:
    """One line on what became of ExpW's faces: kept, boxes past the edge, skipped by reason."""
    past = index.boxes_past_edge()
    done = "clipped to their image" if box_overflow == "clip" else "padded with black"
    reasons = ("box_outside_image", "empty_box", "duplicate", "low_confidence")
    skips = ", ".join(f"{index.skipped.get(r, 0):,} {r}" for r in reasons)
    return (
        f"ExpW: {len(index):,} faces kept, {past:,} of them {done} (boxes past the edge, "
        f"data.expw_box_overflow: {box_overflow}); skipped: {skips}"
    )


#: The keys of a ``data.train_sources`` entry.
SOURCE_KEYS = ("reader", "root", "options", "split")
#: What a ``data.train_sources`` entry looks like, for messages.
SOURCE_FORM = (
    "{reader: a built-in reader or 'pkg.module:Class', root: its folder, options: {...}, "
    "split: one of the reader's splits (default: its first)}"
)
PredictWhich = Literal["target", "val"]


class ExpressionDataModule(pl.LightningDataModule):
    """Aff-Wild2 (+ ExpW, + readers of one's own) expression frames for training, validation
    and prediction.

    Args:
        affwild2_dir: Aff-Wild2 root (holding ``cropped_aligned/``, from ABAW 2023 on also
            ``cropped_aligned_new_50_vids/``, and the annotations). With neither this nor
            ``expw_dir`` given, ferlit's sample data is used (written if absent).
        expw_dir: ExpW root (holding ``image/origin/`` and ``label/label.lst``); None = no ExpW.
        num_classes: 7 (ABAW 2020, the paper) or 8 (with Other, ABAW 2022+).
        affwild2_layout: annotation layout ("abaw2020", "abaw2022", "abaw2024"); None detects it.
        use_affwild2_train: train on Aff-Wild2 train (switch off to train on ExpW alone).
        expw_margin: ExpW face crop enlarged by this fraction of the box on each side.
        expw_min_confidence: drop ExpW faces whose box confidence is below this.
        expw_box_overflow: an ExpW box past the edge of its image is clipped to the image
            ("clip", the default: the face kept, a little narrower) or padded with black to its
            full size ("pad", as a PIL crop does). Boxes with no pixel in their image are
            skipped while indexing; the counts are printed when the training set is first read.
        train_sources: more training data, each read by a reader: a list of
            ``{reader: name, root: folder, options: {...}, split: name}``, the reader a built-in
            name ("affwild2", "expw") or a ``Reader`` subclass of one's own as
            "pkg.module:Class" (``ferlit.data.readers.base``), its options the reader's keyword
            arguments, the split one of the reader's (default: its first, e.g. "train"). Their
            faces are added to the training set after Aff-Wild2 train and ExpW (not with
            ``packed_dir``: a pack holds only what it packed).
        strict_images: stop training on the first damaged image (missing, empty, truncated or
            undecodable). By default a damaged training image is reported by name, counted in
            the run's summary and replaced by the next sample. Validation always stops on one.
            A pack's images were all decoded when it was packed, so this has nothing to do there.
        class_weighting: a scheme computed from the training counts, or an explicit list.
        image_size: side of the square model input (linked from ``model.input_size`` in the CLI).
        augment: apply the training augmentation (flip, colour jitter) below.
        hflip: probability of a horizontal flip of a training face (the paper's augmentation).
        brightness: colour jitter: brightness factor drawn from [1 - b, 1 + b].
        contrast: colour jitter: contrast factor drawn from [1 - c, 1 + c].
        saturation: colour jitter: saturation factor drawn from [1 - s, 1 + s].
        hue: colour jitter: hue shift drawn from [-h, h], in [0, 0.5] (ColorJitter's range).
        augment_strength: multiplies the four colour-jitter strengths (one knob for sweeps;
            1 = the values given, 0 = flips only); hue stops at 0.5, ColorJitter's largest.
        augment_on: where the training augmentation runs: "cpu" in the loader workers, or
            "device": the workers deliver resized unaugmented faces and the flip and jitter run
            batched on the model's device after the batch is moved there (the same definitions
            and per-(seed, epoch, sample) seeding: ``ferlit.data.device_augment``). For a GPU fed
            by few cores, where the CPU jitter caps the loader.
        batch_size: micro-batch size per process (the paper: 64, with 4 accumulated).
        val_batch_size: batch size of validation and prediction; None = ``batch_size``.
        num_workers: DataLoader worker processes per training process (0 = load in the main
            process); at most 8 per CPU core.
        pin_memory: page-locked host memory for batches (faster copies to a GPU); used only
            when the trainer's device is CUDA (without a trainer: when CUDA is available).
        persistent_workers: keep the loader workers between epochs (with ``num_workers`` > 0).
        seed: seed of the training order and of each sample's augmentation (with the epoch).
        index_cache: keep each data set's index in ``index_cache_dir`` and load it from there
            while its annotation files are unchanged (``ferlit.data.cache``).
        index_cache_dir: the index cache folder; None = ``$FERLIT_CACHE_DIR`` or
            ``~/.cache/ferlit/index``.
        packed_dir: read faces and indexes from this pack (``python -m ferlit.data pack``)
            instead of the data folders, which are then not read: training on its Aff-Wild2
            train (unless ``use_affwild2_train`` is false) and its ExpW faces if it has any,
            validation on its Aff-Wild2 val. Its packing options must match these.
        frame_step: train on every k-th indexed frame of each Aff-Wild2 video (ExpW whole).
        max_class_share: cap each class at this share of the training set (after
            ``frame_step``); class weights are computed from what remains. Validation always
            uses every frame.
        allow_split_overlap: train and validate even when an Aff-Wild2 video is in both splits.
            By default such a video stops ``setup`` with an error naming it and its two
            annotation files (``affwild2.videos_in_both_splits``): its validation frames would
            be near-duplicates of training frames.
        frames_dir: unlabelled faces to predict, in the ``cropped_aligned`` layout
            (``<folder>/<video>/00001.jpg ...``), one folder or a list (a folder holding
            ``cropped_aligned/`` and ``cropped_aligned_new_50_vids/`` reads both). Predict
            only: fit and validate refuse it.
        predict_split: the Aff-Wild2 split predicted when ``frames_dir`` is not given: every
            face frame of its videos, annotated or not.
    """

    def __init__(
        self,
        affwild2_dir: str | None = None,
        expw_dir: str | None = None,
        num_classes: int = 7,
        affwild2_layout: Literal["abaw2020", "abaw2022", "abaw2024"] | None = None,
        use_affwild2_train: bool = True,
        expw_margin: float = 0.0,
        expw_min_confidence: float | None = None,
        expw_box_overflow: Literal["clip", "pad"] = "clip",
        train_sources: list[dict] | None = None,
        strict_images: bool = False,
        class_weighting: ClassWeighting | list[float] = "inverse_frequency",
        image_size: int = 112,
        augment: bool = True,
        hflip: float = 0.5,
        brightness: float = 0.4,
        contrast: float = 0.3,
        saturation: float = 0.25,
        hue: float = 0.5,
        augment_strength: float = 1.0,
        augment_on: Literal["cpu", "device"] = "cpu",
        batch_size: int = 64,
        val_batch_size: int | None = None,
        num_workers: int = 4,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        seed: int = 0,
        index_cache: bool = True,
        index_cache_dir: str | None = None,
        packed_dir: str | None = None,
        frame_step: int = 1,
        max_class_share: float | None = None,
        allow_split_overlap: bool = False,
        frames_dir: str | list[str] | None = None,
        predict_split: Literal["val", "train"] = "val",
        *,
        _parts_only: bool = False,
    ) -> None:
        super().__init__()
        check_num_classes("data.num_classes", num_classes)
        if isinstance(class_weighting, list) and len(class_weighting) != num_classes:
            raise ConfigError(
                f"data.class_weighting has {len(class_weighting)} weights, expected "
                f"{num_classes} (one per class: {', '.join(class_names(num_classes))})"
            )
        # Every number checked here, before any data is read (the CLI's types let NaN, infinity
        # and out-of-range values through): a NaN weight or strength would only surface as a
        # NaN loss, a negative num_workers or seed as a traceback from torch or numpy.
        if isinstance(class_weighting, list):
            for k, (weight, name) in enumerate(
                zip(class_weighting, class_names(num_classes), strict=True)
            ):
                check_number(f"data.class_weighting[{k}] ({name})", weight, 0, above=True)
        elif class_weighting not in get_args(ClassWeighting):
            raise ConfigError(
                f"data.class_weighting must be one of {', '.join(get_args(ClassWeighting))} or a "
                f"list of {num_classes} weights, got {class_weighting!r}"
            )
        for option, value, low in (
            ("image_size", image_size, 1),
            ("batch_size", batch_size, 1),
            ("seed", seed, 0),
        ):
            check_number(f"data.{option}", value, low, integer=True)
        check_workers("data.num_workers", num_workers)
        if val_batch_size is not None:  # 0 would silently mean batch_size
            check_number("data.val_batch_size", val_batch_size, 1, integer=True)
        check_number("data.hflip", hflip, 0, 1)  # a probability
        if augment_on not in ("cpu", "device"):
            raise ConfigError(f"data.augment_on must be 'cpu' or 'device', got {augment_on!r}")
        check_number("data.hue", hue, 0, 0.5)  # ColorJitter's hue range stops at 0.5
        for option, value in (
            ("brightness", brightness),
            ("contrast", contrast),
            ("saturation", saturation),
            ("augment_strength", augment_strength),
            ("expw_margin", expw_margin),
        ):
            check_number(f"data.{option}", value, 0)
        if expw_min_confidence is not None:
            check_number("data.expw_min_confidence", expw_min_confidence)
        if not (isinstance(frame_step, int) and frame_step >= 1):
            raise ConfigError(f"data.frame_step must be an integer >= 1, got {frame_step!r}")
        if max_class_share is not None and not 0 < max_class_share <= 1:
            raise ConfigError(f"data.max_class_share must be in (0, 1], got {max_class_share}")
        check_box_overflow(expw_box_overflow, "data.expw_box_overflow")
        # ``_parts_only`` (private: not a command-line option; :meth:`for_parts` sets it): the
        # data tools (``python -m ferlit data stats|pack``) read the parts of ExpW alone and
        # never fit or validate.
        if affwild2_dir is None and expw_dir is not None and packed_dir is None and not _parts_only:
            raise ConfigError(
                "data.expw_dir is set but data.affwild2_dir is not: validation uses Aff-Wild2 val"
            )
        if predict_split not in ("val", "train"):
            raise ConfigError(f"data.predict_split must be 'val' or 'train', got {predict_split!r}")
        if frames_dir is not None:  # the folders themselves are read when predicting
            FramesDirReader(frames_dir, num_classes)
            if predict_split != "val":  # accepted and ignored otherwise
                raise ConfigError(
                    f"data.predict_split {predict_split}: predict reads data.frames_dir, not an "
                    "Aff-Wild2 split; give one of the two"
                )
        self._sources = self._source_readers(train_sources, num_classes)
        if self._sources and packed_dir is not None:
            raise ConfigError(
                "data.train_sources cannot be read with data.packed_dir: a pack holds only the "
                "Aff-Wild2 and ExpW faces it packed; train from the data folders, or leave "
                "data.train_sources unset"
            )
        for k, entry in enumerate(train_sources or []):  # every entry's reader and options right
            if not os.path.exists(entry["root"]):  # else the reader's own OSError, mid-setup
                raise ConfigError(
                    f"data.train_sources[{k}].root {entry['root']}: no such file or folder"
                )
        self.save_hyperparameters(ignore=["_parts_only"])
        s = augment_strength
        self.augmentation = (
            Augmentation(hflip, brightness * s, contrast * s, saturation * s, min(hue * s, 0.5))
            if augment
            else None
        )
        self.device_augmentation = (
            DeviceAugmentation(self.augmentation, seed)
            if augment_on == "device" and self.augmentation is not None
            else None
        )
        self._train_sampler_used: EpochShuffleSampler | None = None  # its epoch keys batches
        #: What ``predict_dataloader`` returns a loader for, in order ("val" too for smoothing
        #: chosen on the val split while predicting another target).
        self.predict_targets: list[PredictWhich] = ["target"]
        self._parts: dict[str, tuple[Reader | None, FrameIndex]] = {}
        self._predict: dict[str, tuple[Reader | None, FrameIndex, str | None, str]] = {}
        self._train_index: FrameIndex | None = None
        self._val_index: FrameIndex | None = None
        self._train_rows: np.ndarray | None = None  # rows of the full training set kept
        self._pack: Pack | None = None

    @staticmethod
    def _source_readers(sources: object, num_classes: int) -> list[tuple[str, Reader, str]]:
        """``data.train_sources`` checked and made into (part name, reader, split) triples,
        before any data is read: a bad entry is a ``ConfigError`` naming
        ``data.train_sources[k]``."""
        if sources is None:
            return []
        if not isinstance(sources, list | tuple):
            raise ConfigError(
                f"data.train_sources: expected a list of {SOURCE_FORM}, got {sources!r}"
            )
        readers = []
        for k, entry in enumerate(sources):
            where = f"data.train_sources[{k}]"
            if not isinstance(entry, dict):
                raise ConfigError(f"{where}: expected {SOURCE_FORM}, got {entry!r}")
            unknown = [key for key in entry if key not in SOURCE_KEYS]
            if unknown:
                raise ConfigError(
                    f"{where}: unknown key {', '.join(map(repr, unknown))}; expected "
                    f"{', '.join(SOURCE_KEYS)}"
                )
            for key in ("reader", "root"):
                if not isinstance(entry.get(key), str | os.PathLike) or not str(entry[key]):
                    raise ConfigError(
                        f"{where}.{key}: expected {'a folder' if key == 'root' else 'a name'}"
                        f", got {entry.get(key)!r}"
                    )
            options = entry.get("options") or {}
            if not isinstance(options, dict) or not all(isinstance(o, str) for o in options):
                raise ConfigError(
                    f"{where}.options: expected a mapping of option names, got {options!r}"
                )
            if "num_classes" in options:
                raise ConfigError(
                    f"{where}.options: num_classes is data.num_classes for every reader"
                )
            reader = create_reader(
                entry["reader"], entry["root"], option=where, num_classes=num_classes, **options
            )
            split = entry.get("split", reader.splits[0])
            if split not in reader.splits:
                raise ConfigError(
                    f"{where}.split: reader {entry['reader']!r} has no split {split!r}; its "
                    f"splits: {', '.join(reader.splits)}"
                )
            readers.append((reader, split))
        names = [reader.name or type(reader).__name__ for reader, _ in readers]
        taken = {"affwild2_train", "affwild2_val", "expw"}
        return [
            (name if names.count(name) == 1 and name not in taken else f"{name}_{k}", *read)
            for k, (name, read) in enumerate(zip(names, readers, strict=True))
        ]

    # -- data locations ------------------------------------------------------------------------

    @classmethod
    def for_parts(
        cls,
        affwild2_dir: str | os.PathLike | None,
        expw_dir: str | os.PathLike | None,
        **options,
    ) -> ExpressionDataModule:
        """A DataModule whose :meth:`part_names` and :meth:`part` the data tools read
        (``python -m ferlit data stats|pack``): ExpW alone is accepted (fit refuses it:
        validation is Aff-Wild2 val), and it is never fit. Folders may be paths; ``options``
        are the other ``__init__`` arguments, checked as there (``ConfigError``)."""
        for key in ("index_cache_dir", "packed_dir"):
            if options.get(key) is not None:
                options[key] = os.fspath(options[key])
        return cls(
            affwild2_dir=None if affwild2_dir is None else os.fspath(affwild2_dir),
            expw_dir=None if expw_dir is None else os.fspath(expw_dir),
            _parts_only=True,
            **options,
        )

    @property
    def uses_sample_data(self) -> bool:
        """No data folder, pack or frames folder given: ferlit's sample data is read."""
        hp = self.hparams
        given = (hp.affwild2_dir, hp.expw_dir, hp.packed_dir, hp.frames_dir)
        return all(option is None for option in given)

    def source_dirs(self) -> tuple[Path | None, Path | None]:
        """The Aff-Wild2 and ExpW roots read: the options as given, or the sample data's two
        folders (written first if absent, ``FERLIT_SAMPLE_DIR``) when :attr:`uses_sample_data`.
        A root is None when its option is unset: ExpW without ``expw_dir``, Aff-Wild2 only for
        ExpW alone (:meth:`for_parts`). ``run_info.json``'s ``data`` section records them."""
        if self.uses_sample_data:
            from ferlit.data.sample import ensure_sample_data

            sample = ensure_sample_data()
            return Path(sample.affwild2_dir), Path(sample.expw_dir)
        expw = Path(self.hparams.expw_dir) if self.hparams.expw_dir else None
        affwild2 = Path(self.hparams.affwild2_dir) if self.hparams.affwild2_dir else None
        return affwild2, expw

    def data_folders(self) -> list[tuple[str, str]]:
        """The (option, folder) pairs the data is read from, which outputs must stay out of:
        the data folders, the pack, the frames to predict, the train sources' roots, and the
        sample data's folder when it is used."""
        hp = self.hparams
        reads = [
            (f"data.{option}", str(getattr(hp, option)))
            for option in ("affwild2_dir", "expw_dir", "packed_dir")
            if getattr(hp, option) is not None
        ]
        if hp.frames_dir is not None:
            given = hp.frames_dir if isinstance(hp.frames_dir, list) else [hp.frames_dir]
            reads += [("data.frames_dir", str(folder)) for folder in given]
        for k, (_, reader, _) in enumerate(self._sources):
            reads += [(f"data.train_sources[{k}].root", folder) for folder in reader.folders()]
        if self.uses_sample_data:
            from ferlit.data.sample import default_sample_dir

            reads.append(("the sample data", str(default_sample_dir())))
        return reads

    def prepare_data(self) -> None:
        """Write the sample data when it is used and absent (once, before the processes start)."""
        if self.uses_sample_data:
            self.source_dirs()

    def setup(self, stage: str) -> None:
        """Index validation with training before the first step (every rank does, as each uses
        both): a validation layout that yields nothing stops the run here, not after an epoch
        (``read_affwild2``), even with ``trainer.num_sanity_val_steps`` 0."""
        stage = getattr(stage, "value", stage)  # Lightning's TrainerFn.FITTING -> "fit"
        if stage in ("fit", "validate") and self.hparams.frames_dir is not None:
            raise ConfigError(
                f"data.frames_dir is set: its unlabelled faces are for predict only; {stage} "
                "reads the Aff-Wild2 splits (leave data.frames_dir unset)"
            )
        if stage in ("fit", "validate") and self.hparams.predict_split != "val":
            raise ConfigError(  # accepted and ignored otherwise
                f"data.predict_split {self.hparams.predict_split}: the split predict reads; "
                f"{stage} validates on Aff-Wild2 val (leave data.predict_split unset)"
            )
        if stage == "fit":
            self.train_index, self.val_index  # noqa: B018 (the properties build the indexes)
            self._check_split_overlap()
            self._train_sampler()  # fewer samples than one optimizer step: refused now, not
            # after the sanity validation has run (Lightning builds the train loader after it)

    def _check_split_overlap(self) -> None:
        """Stop (or, with ``allow_split_overlap``, warn) when a video is in both splits."""
        both = videos_in_both_splits(self.train_index, self.val_index)
        if not both:
            return
        message = split_overlap_message(both)
        if not self.hparams.allow_split_overlap:
            raise DataError(
                f"{message}. Keep each video in one split, or set data.allow_split_overlap true"
            )
        warnings.warn(f"{message} (data.allow_split_overlap is true)", DataWarning, stacklevel=2)

    @property
    def pack(self) -> Pack | None:
        """The pack read instead of the data folders (``packed_dir``), checked against the options."""
        hp = self.hparams
        if hp.packed_dir is None:
            return None
        if self._pack is None:
            pack = Pack.open(hp.packed_dir)
            m = pack.manifest
            for option, value, packed in (
                ("image_size", hp.image_size, m["image_size"]),
                ("num_classes", hp.num_classes, m["num_classes"]),
                ("expw_margin", hp.expw_margin, m["expw_margin"]),
                ("expw_min_confidence", hp.expw_min_confidence, m["expw_min_confidence"]),
                # packs written before the option existed crashed on boxes past the edge, so
                # theirs are all inside: "clip" reads them as they are.
                (
                    "expw_box_overflow",
                    hp.expw_box_overflow,
                    m.get("expw_box_overflow", hp.expw_box_overflow),
                ),
                (
                    "affwild2_layout",
                    hp.affwild2_layout or m["affwild2_layout"],
                    m["affwild2_layout"],
                ),
            ):
                if value != packed and option == "image_size":
                    # fit links data.image_size to model.input_size (a --data.image_size is
                    # refused there); validate and predict take it from the checkpoint
                    raise ConfigError(
                        f"data.image_size is {value} but {hp.packed_dir} was packed with "
                        f"{packed}; train with --model.input_size {packed} (fit sets "
                        f"data.image_size from it), or pack again with --data.image_size {value}"
                    )
                if value != packed:
                    raise ConfigError(
                        f"data.{option} is {value!r} but {hp.packed_dir} was packed with "
                        f"{packed!r}; set data.{option} to {packed!r} or pack again"
                    )
            stale = check_pack_sources(pack)
            if stale is not None:  # trained on, the pack's old faces would disagree with the data
                warnings.warn(
                    f"{stale}; training reads the faces as they were packed: pack again into "
                    "a new folder to train on the new images",
                    DataWarning,
                    stacklevel=2,
                )
            self._pack = pack
        return self._pack

    # -- parts: one reader's index each ---------------------------------------------------------

    def part_names(self, stage: Literal["train", "val"]) -> list[str]:
        """The parts that make a stage, in the order of ``train_index`` / ``val_index``:
        "affwild2_train", "expw" (as packs name them), then one per ``train_sources`` entry
        (its reader's name, with "_<k>" when two entries share it or a built-in part has it);
        "affwild2_val" for val (none for ExpW alone, :meth:`for_parts`)."""
        if stage not in ("train", "val"):
            raise ConfigError(f"stage must be 'train' or 'val', got {stage!r}")
        packed = self.hparams.packed_dir is not None
        affwild2, expw = (None, None) if packed else self.source_dirs()
        if stage == "val":
            return ["affwild2_val"] if packed or affwild2 is not None else []
        parts = ["affwild2_train"] if self.hparams.use_affwild2_train else []
        if packed:
            return parts + (["expw"] if "expw" in self.pack.parts else [])
        parts = parts if affwild2 is not None else []
        parts += ["expw"] if expw is not None else []
        return parts + [name for name, _, _ in self._sources]

    def _readers(self) -> dict[str, tuple[Reader, str]]:
        """Every part read from folders, as (its reader, the split the reader reads)."""
        hp = self.hparams
        affwild2_dir, expw_dir = self.source_dirs()
        readers: dict[str, tuple[Reader, str]] = {}
        if affwild2_dir is not None:
            affwild2 = AffWild2Reader(affwild2_dir, hp.num_classes, hp.affwild2_layout)
            readers = {"affwild2_train": (affwild2, "train"), "affwild2_val": (affwild2, "val")}
        if expw_dir is not None:
            expw = create_reader(
                "expw",
                expw_dir,
                num_classes=hp.num_classes,
                min_confidence=hp.expw_min_confidence,
                margin=hp.expw_margin,
                box_overflow=hp.expw_box_overflow,
            )
            readers["expw"] = (expw, "train")
        for name, reader, split in self._sources:
            readers[name] = (reader, split)
        return readers

    def part(self, name: str) -> tuple[Reader | None, FrameIndex]:
        """The reader of part ``name`` and its full index (through the index cache with
        ``index_cache``; before ``frame_step`` and ``max_class_share``). From a pack
        (``packed_dir``) the reader is None: the faces are in ``pack.frames_file(name)``."""
        if name not in self._parts:
            hp = self.hparams
            if self.pack is not None:
                if name not in self.pack.parts:
                    raise ConfigError(
                        f"{hp.packed_dir} has no part {name!r}; its parts: "
                        f"{', '.join(self.pack.parts)}"
                    )
                self._parts[name] = (None, self.pack.index(name))
                return self._parts[name]
            readers = self._readers()
            if name not in readers and name.startswith("affwild2_") and not hp.affwild2_dir:
                raise ConfigError(
                    f"data.affwild2_dir is not set: the {name} part (Aff-Wild2 "
                    f"{name.split('_')[1]}) needs it"
                )
            if name not in readers:
                raise ConfigError(f"no data part {name!r}; the parts: {', '.join(readers)}")
            reader, split = readers[name]
            if hp.index_cache:
                index = cached_index(reader, split, hp.index_cache_dir)
            else:
                index = reader.index(split)
            self._check_part(name, reader, index, training=name != "affwild2_val")
            self._parts[name] = (reader, index)
        return self._parts[name]

    def _check_part(self, name: str, reader: Reader, index: FrameIndex, training: bool) -> None:
        """A reader's index must fit the run: faces in it, the run's classes, and (to train on)
        a class index on every face. Checked here, so a reader of one's own cannot slip an
        empty part or a label the loss would index out of range."""
        n = self.hparams.num_classes
        what = f"{reader.root}: part {name} (reader {reader.name or type(reader).__name__})"
        if not isinstance(index, FrameIndex):  # a reader of one's own: not a traceback below
            raise ConfigError(
                f"{what}: its index() returned {type(index).__name__}; expected a FrameIndex "
                "(ferlit.data.index.FrameIndex.build)"
            )
        if len(index) == 0:
            raise DataError(f"{what} holds no face")
        if index.num_classes != n:
            raise DataError(
                f"{what} is indexed for {index.num_classes} classes, data.num_classes is {n}"
            )
        bad = np.flatnonzero((index.labels < 0) | (index.labels >= n)) if training else []
        if len(bad):
            raise DataError(
                f"{what}: {len(bad):,} face(s) with no class index 0..{n - 1}, e.g. label "
                f"{int(index.labels[bad[0]])} from {index.source(int(bad[0]))}; a training face "
                "needs one"
            )

    # -- indexes -------------------------------------------------------------------------------

    @property
    def train_index(self) -> FrameIndex:
        if self._train_index is None:
            hp = self.hparams
            names = self.part_names("train")
            if not names and not hp.use_affwild2_train:
                raise ConfigError(
                    "no training data: data.use_affwild2_train is false and data.expw_dir is not set"
                )
            if not names:  # no data folder, and data.frames_dir turned the sample data off
                raise ConfigError(
                    "no training data: data.affwild2_dir and data.expw_dir are not set, and "
                    "with data.frames_dir set (unlabelled faces, for predict only) ferlit's "
                    "sample data is not used either; leave data.frames_dir unset, or give "
                    "the data folders"
                )
            parts = [self.part(name)[1] for name in names]
            if "expw" in names:
                expw = parts[names.index("expw")]
                rank_zero_info(expw_summary(expw, hp.expw_box_overflow))
            full = FrameIndex.concat(parts)
            if hp.frame_step == 1 and hp.max_class_share is None:
                self._train_index = full
            else:
                self._train_rows = subsample(full, hp.frame_step, hp.max_class_share)
                self._train_index = full.subset(self._train_rows)
        return self._train_index

    @property
    def val_index(self) -> FrameIndex:
        if self._val_index is None:
            self._val_index = self.part("affwild2_val")[1]
        return self._val_index

    @property
    def class_counts(self) -> list[int]:
        """Training samples per class."""
        return self.train_index.class_counts().tolist()

    @property
    def class_weights(self) -> list[float]:
        """The loss weights the model gets (linked in the CLI): explicit, or from the counts."""
        weighting = self.hparams.class_weighting
        if isinstance(weighting, list):
            return [float(w) for w in weighting]
        return class_weights_from_counts(self.class_counts, weighting)

    # -- prediction ----------------------------------------------------------------------------

    def _predicted(self, which: PredictWhich) -> tuple[Reader | None, FrameIndex, str | None, str]:
        """(reader, index, pack part or None, note on which frames) of what ``which`` predicts."""
        if which not in ("target", "val"):
            raise ConfigError(f"predict: which must be 'target' or 'val', got {which!r}")
        if which not in self._predict:
            hp = self.hparams
            split = "val" if which == "val" else hp.predict_split
            if which == "target" and hp.frames_dir is not None:
                reader = FramesDirReader(hp.frames_dir, hp.num_classes)
                found = (reader, reader.index("all"), None, "every frame given (data.frames_dir)")
            elif self.pack is not None:
                part = f"affwild2_{split}"
                note = "annotated frames only: a pack holds no unannotated frame"
                found = (None, self.part(part)[1], part, note)
            else:
                reader, index = self.part(f"affwild2_{split}")
                every = AffWild2Reader.face_frames_index(index)
                if every is None:
                    note = "annotated frames only: the frame folders could not be read"
                    found = (reader, index, None, note)
                else:
                    note = "every face frame of the split's videos, annotated or not"
                    found = (reader, every, None, note)
            self._predict[which] = found
        return self._predict[which]

    def predict_index(self, which: PredictWhich = "target") -> FrameIndex:
        """The faces ``which`` predicts, in the order of its loader's ``sample`` numbers.

        "target": the ``frames_dir`` faces (labels -1), else every face frame of the
        ``predict_split``'s videos, annotated or not (target -1 where not scored:
        ``AffWild2Reader.face_frames_index``), or from a pack its annotated frames only. "val":
        the same for the Aff-Wild2 val split (smoothing chosen on val while predicting another
        target).
        """
        return self._predicted(which)[1]

    def predict_context(self, which: PredictWhich = "target") -> str:
        """Which frames ``predict_index(which)`` holds, in words, for reports."""
        return self._predicted(which)[3]

    def predict_description(self, which: PredictWhich = "target") -> str:
        """The data ``which`` predicts, as reports name it."""
        hp = self.hparams
        if which == "target" and hp.frames_dir is not None:
            given = hp.frames_dir if isinstance(hp.frames_dir, list) else [hp.frames_dir]
            return f"{', '.join(map(str, given))} (unlabelled)"
        split = "val" if which == "val" else hp.predict_split
        if hp.packed_dir is not None:
            return f"Aff-Wild2 {split} from the pack {hp.packed_dir}"
        if self.uses_sample_data:
            return f"ferlit sample data (drawn faces, not Aff-Wild2), {split} split"
        return f"Aff-Wild2 {split}, {self.predict_index(which).roots[0]}"

    def predict_dataloader(self) -> DataLoader | list[DataLoader]:
        """One loader per entry of ``predict_targets`` (a list when more than one), each sharded
        over the processes as validation is (``ShardSampler``, no padding) and yielding
        ``(images, labels, sample)`` batches, ``sample`` a row of ``predict_index(which)``."""
        loaders = [self._predict_loader(which) for which in self.predict_targets]
        return loaders[0] if len(loaders) == 1 else loaders

    def _predict_loader(self, which: PredictWhich) -> DataLoader:
        hp = self.hparams
        rank, world_size, _ = self._distribution()
        reader, index, pack_part, _ = self._predicted(which)
        transform = build_transform(hp.image_size, None)
        if pack_part is not None:
            files = [self.pack.frames_file(pack_part)]
            dataset: Dataset = PackedFaceDataset(files, index.labels, None, transform)
        else:
            dataset = FaceDataset([(reader, index)], transform)
        sampler = ShardSampler(len(dataset), rank, world_size)
        return self._loader(dataset, sampler, hp.val_batch_size or hp.batch_size)

    # -- loaders -------------------------------------------------------------------------------

    def _distribution(self) -> tuple[int, int, int]:
        """(rank, world size, accumulate_grad_batches) from the attached trainer, if any."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1, 1
        return trainer.global_rank, trainer.world_size, trainer.accumulate_grad_batches

    def _loader(
        self, dataset: Dataset, sampler, batch_size: int, loader: type[DataLoader] = DataLoader
    ) -> DataLoader:
        hp = self.hparams
        return loader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=hp.num_workers,
            pin_memory=hp.pin_memory and self._device_is_cuda(),
            persistent_workers=hp.persistent_workers and hp.num_workers > 0,
            drop_last=False,
            worker_init_fn=exit_with_parent,  # no worker outlives a killed run
        )

    def _train_sampler(self) -> EpochShuffleSampler:
        rank, world_size, accumulate = self._distribution()
        hp = self.hparams
        return EpochShuffleSampler(
            len(self.train_index), hp.batch_size, accumulate, hp.seed, rank, world_size, keyed=True
        )

    def _dataset(self, stage: Literal["train", "val"], transform) -> Dataset:
        """The faces of a stage: from the pack's files, or each part's through its reader."""
        names = self.part_names(stage)
        rows = self._train_rows if stage == "train" else None
        labels = (self.train_index if stage == "train" else self.val_index).labels
        if self.pack is not None:
            files = [self.pack.frames_file(name) for name in names]
            return PackedFaceDataset(files, labels, rows, transform)
        return FaceDataset([self.part(name) for name in names], transform, rows)

    def train_dataloader(self) -> DataLoader:
        hp = self.hparams
        sampler = self._train_sampler()
        self._train_sampler_used = sampler
        on_cpu = self.device_augmentation is None
        dataset = self._dataset(
            "train", build_transform(hp.image_size, self.augmentation if on_cpu else None)
        )
        seeded = EpochSeededDataset(dataset, hp.seed, strict=hp.strict_images)
        return self._loader(seeded, sampler, hp.batch_size, ResumableLoader)

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        """Keep a training batch's 4th element (damaged images each sample replaced) on the host,
        and with ``augment_on: device`` plan its augmentation here, on the host.

        ``BestValidationSummary`` reads the damaged counts after every step; read from the GPU
        they would make every step wait for the device. A list of ints is left where it is by the
        batch transfer. The augmentation plan (``DeviceAugmentation.plan``: flips, factors and
        each jitter step's rows, from the batch's sample numbers and the sampler's epoch) is
        appended as a 5th element, pinned like the batch (``data.pin_memory`` and a CUDA
        trainer), so Lightning's own transfer moves it without blocking and
        ``on_after_batch_transfer`` applies it with no host synchronisation (issue 17).
        """
        if isinstance(batch, list | tuple) and len(batch) > 3 and torch.is_tensor(batch[3]):
            batch = [*batch[:3], batch[3].tolist(), *batch[4:]]
        if self._augments_on_device(batch):
            plan = self.device_augmentation.plan(batch[2], self._augmentation_epoch())
            if self.hparams.pin_memory and self._device_is_cuda():  # as _loader's batches
                plan = plan.pin_memory()
            batch = [*batch, plan]
        return batch

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """With ``augment_on: device``, flip and jitter a training batch where it now is.

        Only training batches (4 elements and the plan ``on_before_batch_transfer`` added, while
        the trainer trains) are augmented: validation, the sanity check and prediction never are.
        The plan is dropped: the training step sees the usual 4 elements. The epoch is the
        training sampler's, the one the CPU path's keys carry, so a resumed run augments each
        sample as the first run did. A training batch that arrives without a plan (this hook
        called alone) is planned here from its sample numbers: the same faces, at the cost of
        reading them back from the device.
        """
        if (
            self.device_augmentation is not None
            and isinstance(batch, list | tuple)
            and len(batch) == 5
            and isinstance(batch[4], AugmentationPlan)
        ):
            return [self.device_augmentation.apply(batch[0], batch[4]), *batch[1:4]]
        if self._augments_on_device(batch):
            images = self.device_augmentation(batch[0], batch[2], self._augmentation_epoch())
            batch = [images, *batch[1:]]
        return batch

    def _augments_on_device(self, batch) -> bool:
        """Whether ``batch`` is a training batch (4 elements, the trainer training) to augment on
        the device."""
        trainer = getattr(self, "trainer", None)
        return (
            self.device_augmentation is not None
            and trainer is not None
            and trainer.training
            and isinstance(batch, list | tuple)
            and len(batch) == 4
        )

    def _augmentation_epoch(self) -> int:
        sampler = self._train_sampler_used
        return sampler.epoch if sampler is not None else self.trainer.current_epoch

    def _device_is_cuda(self) -> bool:
        """Whether batches go to a CUDA device: the attached trainer's root device, or without a
        trainer whether CUDA is available. Pinning batches for a CPU run would only take
        page-locked memory from the system."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return torch.cuda.is_available()
        return trainer.strategy.root_device.type == "cuda"

    def val_dataloader(self) -> DataLoader:
        rank, world_size, _ = self._distribution()
        hp = self.hparams
        dataset = self._dataset("val", build_transform(hp.image_size, None))
        sampler = ShardSampler(len(dataset), rank, world_size)
        return self._loader(dataset, sampler, hp.val_batch_size or hp.batch_size)
