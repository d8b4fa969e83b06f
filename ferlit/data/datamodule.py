"""The DataModule: Aff-Wild2 train (+ ExpW) for training, Aff-Wild2 validation for validation.

Cafarelli et al. train on Aff-Wild2 train merged with ExpW and validate on Aff-Wild2 val, with
a class-weighted cross entropy whose weights are count(most common class) / count(c).
"""

from __future__ import annotations

import random
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
from ferlit.data.cache import cached_read_affwild2, cached_read_expw
from ferlit.data.images import BoxOverflow, ImageError, check_box_overflow, load_face
from ferlit.data.index import BOXED_IMAGE, FrameIndex
from ferlit.data.pack import Pack, PackedFaceDataset, check_pack_sources
from ferlit.data.readers.affwild2 import read_affwild2, split_overlap_message, videos_in_both_splits
from ferlit.data.readers.expw import read_expw
from ferlit.data.samplers import EpochShuffleSampler, ResumableLoader, ShardSampler
from ferlit.data.subsample import subsample
from ferlit.data.transforms import Augmentation, build_transform, to_chw_uint8
from ferlit.data.workers import exit_with_parent
from ferlit.errors import ConfigError, DataError, DataWarning
from ferlit.expressions import class_names

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


#: Consecutive damaged images a training sample may skip before the run stops: timm's
#: ``ImageDataset`` likewise moves to the next sample on a read error and gives up after 50.
MAX_CONSECUTIVE_BAD_IMAGES = 50


class DamagedImageWarning(UserWarning):
    """A training image could not be read and another sample was taken in its place."""


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


class FaceDataset(Dataset):
    """Faces of a FrameIndex as (uint8 3xHxW image, label, sample number) triples.

    A damaged image raises ``ImageError`` naming the file (validation and evaluation stop on it,
    so their scores are over the whole split); training wraps this in ``EpochSeededDataset``,
    which replaces it.
    """

    def __init__(
        self, index: FrameIndex, transform, margin: float = 0.0, box_overflow: BoxOverflow = "clip"
    ) -> None:
        self.index = index
        self.transform = transform
        self.margin = margin
        self.box_overflow = box_overflow

    def __len__(self) -> int:
        return len(self.index)

    def image_path(self, i: int) -> str:
        return self.index.image_path(i)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        face = load_face(self.index, i, self.margin, self.box_overflow)
        image = self.transform(image=face)["image"]
        return torch.from_numpy(to_chw_uint8(image)), int(self.index.labels[i]), i


class EpochSeededDataset(Dataset):
    """Training samples keyed by (epoch, sample), each augmented from its own random state.

    albumentations 2 transforms draw from generators they own, seeded from OS entropy unless
    given a seed, and every DataLoader worker gets a copy of the same generators: augmentation
    neither repeats with the run's seed nor differs between workers (two workers flip and
    jitter in lockstep). Seeding the transform from (seed, epoch, sample) before each sample
    makes a sample's augmentation the same whatever the number of workers, the batch it falls
    in, or whether the run was resumed. Keys come from ``EpochShuffleSampler(keyed=True)``;
    a plain sample number reads the wrapped dataset unseeded, and the wrapped dataset's
    attributes read through (``loader.dataset.transform`` etc.).

    A damaged image (``ImageError``) must not end a multi-hour run: unless ``strict``, it is
    reported by name (``DamagedImageWarning``) and the next sample, ``(i + 1) % n``, is taken in
    its place, deterministically, failing only after ``MAX_CONSECUTIVE_BAD_IMAGES`` bad ones in a
    row (timm's ``ImageDataset`` rule). Items are (image, label, sample number, skipped): the
    number of damaged samples skipped before the one returned, i.e. samples ``sample - 1``, ...,
    ``sample - skipped`` (mod n), so the main process can count and name them (workers are
    separate processes); see ``ferlit.training.callbacks.best.BestValidationSummary``.
    """

    def __init__(
        self, dataset: FaceDataset | PackedFaceDataset, seed: int, strict: bool = False
    ) -> None:
        self.dataset = dataset
        self.seed = seed
        self.strict = strict

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str):
        if name == "dataset":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, key: tuple[int, int] | int) -> tuple[torch.Tensor, int, int, int]:
        epoch, i = (None, int(key)) if isinstance(key, int | np.integer) else key
        n = len(self.dataset)
        first: ImageError | None = None
        for skipped in range(min(MAX_CONSECUTIVE_BAD_IMAGES, n)):
            j = (i + skipped) % n
            try:
                image, label, sample = self._read(epoch, j)
            except ImageError as error:
                if self.strict:
                    raise
                first = first or error
                warnings.warn(
                    f"{error}: damaged training image skipped, sample {(j + 1) % n} taken "
                    "in its place (data.strict_images: true stops on it instead)",
                    DamagedImageWarning,
                    stacklevel=2,
                )
                continue
            return image, label, sample, skipped
        raise DataError(
            f"{min(MAX_CONSECUTIVE_BAD_IMAGES, n)} training images in a row are damaged, from "
            f"{first}; check the data with python -m ferlit.data check"
        )

    def _read(self, epoch: int | None, i: int) -> tuple[torch.Tensor, int, int]:
        transform = self.dataset.transform
        if transform is not None and epoch is not None:
            rng = np.random.default_rng([self.seed, epoch, i])
            transform.set_random_state(rng, random.Random(int(rng.integers(2**63))))
        return self.dataset[i]


class ExpressionDataModule(pl.LightningDataModule):
    """Aff-Wild2 (+ ExpW) expression frames for training and validation.

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
        strict_images: stop training on the first damaged image (missing, empty, truncated or
            undecodable). By default a damaged training image is reported by name, counted in
            the run's summary and replaced by the next sample. Validation always stops on one.
            A pack's images were all decoded when it was packed, so this has nothing to do there.
        class_weighting: a scheme computed from the training counts, or an explicit list.
        image_size: side of the square model input (linked from ``model.input_size`` in the CLI).
        augment: apply the training augmentation (flip, colour jitter) below.
        augment_strength: multiplies the four colour-jitter strengths (one knob for sweeps;
            1 = the values given, 0 = flips only); hue stops at 0.5, ColorJitter's largest.
        batch_size: micro-batch size per process (the paper: 64, with 4 accumulated).
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
    ) -> None:
        super().__init__()
        if num_classes not in (7, 8):
            raise ConfigError(
                f"data.num_classes must be 7 (ABAW 2020) or 8 (with Other, ABAW 2022+), got {num_classes}"
            )
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
        if affwild2_dir is None and expw_dir is not None and packed_dir is None:
            raise ConfigError(
                "data.expw_dir is set but data.affwild2_dir is not: validation uses Aff-Wild2 val"
            )
        self.save_hyperparameters()
        s = augment_strength
        self.augmentation = (
            Augmentation(hflip, brightness * s, contrast * s, saturation * s, min(hue * s, 0.5))
            if augment
            else None
        )
        self._train_index: FrameIndex | None = None
        self._val_index: FrameIndex | None = None
        self._train_rows: np.ndarray | None = None  # rows of the full training set kept
        self._pack: Pack | None = None

    # -- data locations ------------------------------------------------------------------------

    @property
    def uses_sample_data(self) -> bool:
        hp = self.hparams
        return hp.affwild2_dir is None and hp.expw_dir is None and hp.packed_dir is None

    def _dirs(self) -> tuple[Path, Path | None]:
        """The Aff-Wild2 and ExpW roots; the sample data (written if absent) when none is set."""
        if self.uses_sample_data:
            from ferlit.data.sample.synth import ensure_sample_data

            sample = ensure_sample_data()
            return Path(sample.affwild2_dir), Path(sample.expw_dir)
        expw = Path(self.hparams.expw_dir) if self.hparams.expw_dir else None
        return Path(self.hparams.affwild2_dir), expw

    def prepare_data(self) -> None:
        if self.hparams.packed_dir is None:
            self._dirs()

    def setup(self, stage: str) -> None:
        """Index validation with training before the first step (every rank does, as each uses
        both): a validation layout that yields nothing stops the run here, not after an epoch
        (``read_affwild2``), even with ``trainer.num_sanity_val_steps`` 0."""
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

    def _train_parts(self) -> list[str]:
        """The pack's parts that make the training set, in the order of ``train_index``."""
        parts = ["affwild2_train"] if self.hparams.use_affwild2_train else []
        return parts + (["expw"] if "expw" in self.pack.parts else [])

    # -- indexes -------------------------------------------------------------------------------

    @property
    def train_index(self) -> FrameIndex:
        if self._train_index is None:
            hp = self.hparams
            parts = []
            if self.pack is not None:
                parts = [self.pack.index(part) for part in self._train_parts()]
            else:
                affwild2_dir, expw_dir = self._dirs()
                if hp.use_affwild2_train:
                    parts.append(self._read_affwild2(affwild2_dir, "train"))
                if expw_dir is not None:
                    parts.append(self._read_expw(expw_dir))
            if not parts:
                raise ConfigError(
                    "no training data: data.use_affwild2_train is false and data.expw_dir is not set"
                )
            for part in parts:
                if len(part.group_kinds) and (part.group_kinds == BOXED_IMAGE).all():
                    rank_zero_info(expw_summary(part, hp.expw_box_overflow))
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
            if self.pack is not None:
                self._val_index = self.pack.index("affwild2_val")
            else:
                self._val_index = self._read_affwild2(self._dirs()[0], "val")
        return self._val_index

    def _read_affwild2(self, affwild2_dir: Path, split: str) -> FrameIndex:
        hp = self.hparams
        if hp.index_cache:
            return cached_read_affwild2(
                affwild2_dir,
                split,
                hp.num_classes,
                hp.affwild2_layout,
                cache_dir=hp.index_cache_dir,
            )
        return read_affwild2(affwild2_dir, split, hp.num_classes, hp.affwild2_layout)

    def _read_expw(self, expw_dir: Path) -> FrameIndex:
        hp = self.hparams
        if hp.index_cache:
            return cached_read_expw(
                expw_dir, hp.num_classes, hp.expw_min_confidence, cache_dir=hp.index_cache_dir
            )
        return read_expw(expw_dir, hp.num_classes, hp.expw_min_confidence)

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
            pin_memory=hp.pin_memory and torch.cuda.is_available(),
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

    def train_dataloader(self) -> DataLoader:
        hp = self.hparams
        sampler = self._train_sampler()
        transform = build_transform(hp.image_size, self.augmentation)
        if self.pack is not None:
            files = [self.pack.frames_file(part) for part in self._train_parts()]
            labels = self.train_index.labels
            dataset = PackedFaceDataset(files, labels, self._train_rows, transform)
        else:
            dataset = FaceDataset(self.train_index, transform, hp.expw_margin, hp.expw_box_overflow)
        seeded = EpochSeededDataset(dataset, hp.seed, strict=hp.strict_images)
        return self._loader(seeded, sampler, hp.batch_size, ResumableLoader)

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        """Keep a training batch's 4th element (damaged images each sample replaced) on the host.

        ``BestValidationSummary`` reads it after every step; read from the GPU it would make every
        step wait for the device. A list of ints is left where it is by the batch transfer.
        """
        if isinstance(batch, list | tuple) and len(batch) > 3 and torch.is_tensor(batch[3]):
            batch = [*batch[:3], batch[3].tolist(), *batch[4:]]
        return batch

    def val_dataloader(self) -> DataLoader:
        rank, world_size, _ = self._distribution()
        hp = self.hparams
        transform = build_transform(hp.image_size, None)
        if self.pack is not None:
            files = [self.pack.frames_file("affwild2_val")]
            dataset = PackedFaceDataset(files, self.val_index.labels, None, transform)
        else:
            dataset = FaceDataset(self.val_index, transform, hp.expw_margin, hp.expw_box_overflow)
        sampler = ShardSampler(len(dataset), rank, world_size)
        return self._loader(dataset, sampler, hp.val_batch_size or hp.batch_size)
