"""The torch Datasets: faces read through their readers, faces read from a pack, and the seeded
training wrapper that augments each (epoch, sample) the same way every time.

Every dataset yields ``(image, label, sample)``: a uint8 ``3 x H x W`` tensor (the model's
preprocessing runs on the device: ``ferlit.models``), the ABAW class index (-1 for a face that
is not scored) and the sample's row, so predictions can be put back in index order.
"""

from __future__ import annotations

import os
import random
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ferlit.data.images import ImageError, load_face
from ferlit.data.index import FrameIndex
from ferlit.data.readers.base import Reader
from ferlit.data.transforms import to_chw_uint8
from ferlit.errors import DataError

#: Consecutive damaged images a training sample may skip before the run stops: timm's
#: ``ImageDataset`` likewise moves to the next sample on a read error and gives up after 50.
MAX_CONSECUTIVE_BAD_IMAGES = 50


class DamagedImageWarning(UserWarning):
    """A training image could not be read and another sample was taken in its place."""


class FaceDataset(Dataset):
    """The faces of one or more readers' indexes, taken as one, as (uint8 3xHxW image, label,
    sample number) triples.

    ``parts`` is a list of ``(reader, index)`` pairs (Aff-Wild2 train, then ExpW, then any
    ``data.train_sources``, as the DataModule builds them); sample ``i`` is row ``rows[i]`` of the
    parts taken in order (every row when ``rows`` is None), and its face is loaded by the reader
    of its part (``Reader.load_face``: an Aff-Wild2 frame whole, an ExpW box crop with that
    reader's margin). A ``FrameIndex`` alone is read with ``images.load_face`` and no margin
    (whole frames, and boxes as they are), for tools and tests.

    A damaged image raises ``ImageError`` naming the file (validation and prediction stop on it,
    so their scores are over the whole split); training wraps this in ``EpochSeededDataset``,
    which replaces it.
    """

    def __init__(
        self,
        parts: FrameIndex | Sequence[tuple[Reader, FrameIndex]],
        transform,
        rows: np.ndarray | None = None,
    ) -> None:
        pairs = [(None, parts)] if isinstance(parts, FrameIndex) else list(parts)
        self.readers = [reader for reader, _ in pairs]
        self.indexes = [index for _, index in pairs]
        self.offsets = np.cumsum([0, *(len(index) for index in self.indexes)])
        self.rows = None if rows is None else np.asarray(rows, np.int64)
        labels = np.concatenate([index.labels for index in self.indexes])
        self.labels = labels if self.rows is None else labels[self.rows]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def locate(self, i: int) -> tuple[Reader | None, FrameIndex, int]:
        """The reader, the index and the row in it of sample ``i``."""
        row = i if self.rows is None else int(self.rows[i])
        part = int(np.searchsorted(self.offsets, row, side="right")) - 1
        return self.readers[part], self.indexes[part], row - int(self.offsets[part])

    def image_path(self, i: int) -> str:
        _, index, row = self.locate(i)
        return index.image_path(row)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        reader, index, row = self.locate(i)
        face = load_face(index, row) if reader is None else reader.load_face(index, row)
        image = self.transform(image=face)["image"]
        return torch.from_numpy(to_chw_uint8(image)), int(self.labels[i]), i


class PackedFaceDataset(Dataset):
    """Packed faces as (uint8 3xHxW image, label, sample number) triples, as ``FaceDataset``.

    ``frame_files`` are the ``frames.npy`` of the parts, taken as one array in that order; sample
    ``i`` is row ``rows[i]`` of it (all rows in order when ``rows`` is None) with label
    ``labels[i]``. The files are memory-mapped in each process on first use, never pickled into
    workers, and a worker holds no per-sample Python object.
    """

    def __init__(
        self,
        frame_files: Sequence[str | os.PathLike],
        labels: np.ndarray,
        rows: np.ndarray | None = None,
        transform=None,
    ) -> None:
        self.frame_files = [os.fspath(f) for f in frame_files]
        lengths = [len(np.load(f, mmap_mode="r")) for f in self.frame_files]
        self.offsets = np.cumsum([0, *lengths])
        self.labels = np.asarray(labels)
        self.rows = None if rows is None else np.asarray(rows, np.int64)
        expected = self.offsets[-1] if rows is None else len(self.rows)
        if len(self.labels) != expected:
            raise ValueError(f"{len(self.labels)} labels for {expected} packed samples")
        self.transform = transform
        self._frames: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"_frames": None}  # each worker maps the files itself

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        if self._frames is None:
            self._frames = [np.load(f, mmap_mode="r") for f in self.frame_files]
        row = i if self.rows is None else int(self.rows[i])
        part = int(np.searchsorted(self.offsets, row, side="right")) - 1
        face = np.array(self._frames[part][row - self.offsets[part]])
        if self.transform is not None:
            face = self.transform(image=face)["image"]
        return torch.from_numpy(to_chw_uint8(face)), int(self.labels[i]), i


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
