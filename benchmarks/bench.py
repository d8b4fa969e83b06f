"""``python benchmarks/bench.py`` (``make bench``): how fast the input pipeline and a training step are on this machine.

One H100 trains SE-ResNet-50 at 112x112 on thousands of images per second, so the input
pipeline, not the GPU, decides how long an epoch over the 1,004,523 training faces of Cafarelli
et al. (2020) takes. Every figure is measured in the same run, on data the bench writes itself:

* loader throughput with the paper's augmentation (flip + colour jitter), on the sample data's
  Aff-Wild2 train frames (112x112 JPEGs): (a) a naive baseline — PIL opening every JPEG,
  torchvision's RandomHorizontalFlip + ColorJitter + ToTensor + Normalize, a default
  DataLoader —, (b) ferlit's JPEG path and (c) its packed path, (d) the ceiling: the same
  DataLoader copying packed uint8 faces with no augmentation, and (e) the packed path with
  ``data.augment_on: device`` (the workers' share: the flip and jitter then run on the model's
  device). All read the same sample order with the same batch size and workers; only the
  dataset differs;
* the index of a generated full-scale layout (~550 videos, ~2.6M annotation lines, ~1.1M
  empty image files, ExpW's 91,793 faces): build time, cached-load time, the resident memory
  of the DataModule holding it, and the private memory of DataLoader workers over one epoch;
* SE-ResNet-50 training steps at 112x112: fp32, and bf16-mixed + channels_last where the device
  has bf16 arithmetic.

``--quick`` shrinks every part to seconds (the test suite runs it); its figures say nothing.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from jsonargparse import ArgumentParser
from rich.console import Console
from rich.progress import track
from torch.utils.data import DataLoader, Dataset

from ferlit.data.datamodule import ExpressionDataModule
from ferlit.data.device_augment import DeviceAugmentation
from ferlit.data.index import FrameIndex
from ferlit.data.pack import PackedFaceDataset, pack
from ferlit.data.readers.affwild2 import (
    FRAMES_DIR,
    annotation_dir,
    frame_file,
    write_annotation_file,
)
from ferlit.data.readers.expw import IMAGES_DIR, LABEL_FILE, ExpWFace, write_label_list
from ferlit.data.sample import CLASS_FREQUENCIES, SampleData, write_sample_data
from ferlit.data.samplers import EpochShuffleSampler
from ferlit.data.transforms import Augmentation
from ferlit.data.workers import exit_with_parent
from ferlit.errors import ConfigError, FerlitError, counted, quiet_closed_stdout, user_message
from ferlit.expressions import EXPW_TO_ABAW
from ferlit.io import atomic_write, check_creatable

#: The targets of issue 7, checked on the figures of the same run.
TARGET_JPEG_RATIO = 2.0  # (b) / (a)
TARGET_PACKED_RATIO = 2.5  # (c) / (a)
TARGET_CACHED_LOAD_S = 2.0
TARGET_DATAMODULE_MB = 200.0
#: Worker growth allowed over an epoch: per-sample Python objects copied on read would cost
#: hundreds of MB at 1M samples (pytorch/pytorch issue 13246); allocator noise is a few MB.
TARGET_WORKER_GROWTH_MB = 10.0
IMAGE_SIZE = 112
BACKBONE = "legacy_seresnet50"  # the paper's SE-ResNet-50
#: ImageNet statistics, as a naive torchvision pipeline normalises.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Scale:
    """How much data and work each part of the bench uses."""

    sample_scale: float  # synth sample data (images for the loader figures)
    loader_images: int  # images per loader measurement
    videos: int  # full-scale layout
    lines: int
    expw_faces: int
    train_batch: int
    train_steps: int


FULL = Scale(1.0, 6000, 550, 2_600_000, 91_793, 32, 5)
QUICK = Scale(0.1, 96, 6, 3000, 200, 2, 1)
GPU_TRAIN_BATCH, GPU_TRAIN_STEPS = 256, 20
#: Share of annotation lines labelled (not -1), and of those, the share with a face crop: with
#: 550 videos and 2.6M lines the train index is ~0.91M frames, ~1.0M with ExpW, as the paper's.
ANNOTATED, WITH_IMAGE = 0.53, 0.8
TRAIN_VIDEO_SHARE = 0.82
EXPW_FACES_PER_IMAGE = 1.5


# -- loader throughput ---------------------------------------------------------------------------


class NaiveDataset(Dataset):
    """The baseline a first attempt writes: a list of paths, PIL, torchvision transforms."""

    def __init__(self, paths: list[str], labels: list[int]) -> None:
        from torchvision import transforms as T

        self.paths, self.labels = paths, labels
        a = Augmentation()
        self.transform = T.Compose(
            [
                T.RandomHorizontalFlip(a.hflip),
                T.ColorJitter(a.brightness, a.contrast, a.saturation, a.hue),
                T.ToTensor(),
                T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from PIL import Image

        with Image.open(self.paths[i]) as image:
            return self.transform(image.convert("RGB")), self.labels[i]


def images_per_second(dataset: Dataset, order: list[int], batch_size: int, workers: int) -> float:
    """Images/s through a DataLoader reading ``order``, after its first batch (worker start-up)."""
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=order,
        num_workers=workers,
        worker_init_fn=exit_with_parent,  # none outlives a killed bench
    )
    batches = iter(loader)
    next(batches)
    start, images = time.perf_counter(), 0
    for batch in batches:
        images += len(batch[0])
    return images / (time.perf_counter() - start)


def bench_loaders(work: Path, scale: Scale, workers: int, batch_size: int, quiet: bool) -> dict:
    sample = _packed_sample(work, scale, workers, quiet)
    status = Console(stderr=True, quiet=quiet)
    options = dict(
        affwild2_dir=str(sample.affwild2_dir),
        image_size=IMAGE_SIZE,
        batch_size=batch_size,
        num_workers=workers,
        index_cache_dir=str(work / "cache"),
    )
    jpeg = ExpressionDataModule(**options).train_dataloader().dataset
    packed = ExpressionDataModule(**options, packed_dir=str(work / "pack")).train_dataloader()
    packed = packed.dataset
    # data.augment_on device: the workers only resize (a no-op on packed faces) and copy; the
    # flip and jitter run on the model's device, outside the loader.
    device_side = ExpressionDataModule(
        **options, packed_dir=str(work / "pack"), augment_on="device"
    ).train_dataloader()
    device_side = device_side.dataset
    index = ExpressionDataModule(**options).train_index
    naive = NaiveDataset([index.image_path(i) for i in range(len(index))], index.labels.tolist())
    ceiling = PackedFaceDataset(packed.frame_files, packed.labels, packed.rows, transform=None)
    epochs = math.ceil((scale.loader_images + batch_size) / len(index))
    rng = np.random.default_rng(0)
    order = np.concatenate([rng.permutation(len(index)) for _ in range(epochs)])
    order = order[: scale.loader_images + batch_size].tolist()

    rates = {}
    for key, dataset, what in (
        ("naive", naive, "(a) naive baseline"),
        ("jpeg", jpeg, "(b) ferlit JPEG path"),
        ("packed", packed, "(c) ferlit packed path"),
        ("ceiling", ceiling, "(d) ceiling: packed uint8 copies"),
        ("packed_device", device_side, "(e) packed path, augment_on device"),
    ):
        with status.status(f"Loader throughput: {what}"):
            rates[key] = images_per_second(dataset, order, batch_size, workers)
    return {
        "images": len(order) - batch_size,
        "frames": len(index),
        **rates,
        "jpeg_ratio": rates["jpeg"] / rates["naive"],
        "packed_ratio": rates["packed"] / rates["naive"],
        "packed_per_worker": rates["packed"] / max(workers, 1),
    }


def _packed_sample(work: Path, scale: Scale, workers: int, quiet: bool) -> SampleData:
    """The sample data (``work/sample``), its Aff-Wild2 frames packed at 112x112 (``work/pack``)."""
    sample = _sample_data(work / "sample", scale.sample_scale, quiet)
    with Console(stderr=True, quiet=quiet).status("Packing the sample data's Aff-Wild2 frames"):
        pack(
            work / "pack",
            sample.affwild2_dir,
            size=IMAGE_SIZE,
            workers=workers,
            progress=False,
            index_cache_dir=work / "cache",
        )
    return sample


def _sample_data(root: Path, scale: float, quiet: bool) -> SampleData:
    if (root / "manifest.json").is_file():
        data = SampleData.open(root)
        if data.manifest.get("scale") == scale:
            return data
        shutil.rmtree(root)
    return write_sample_data(root, seed=0, scale=scale, progress=not quiet)


# -- the index at full scale ---------------------------------------------------------------------


def write_fullscale_layout(
    root: str | os.PathLike,
    videos: int = 550,
    lines: int = 2_600_000,
    expw_faces: int = 91_793,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, int]:
    """An Aff-Wild2 (ABAW 2020 layout) + ExpW tree of real size whose frames are empty files.

    Indexing Aff-Wild2 lists file names and never opens a frame, so empty files measure it
    faithfully; indexing ExpW reads each image's size from its header, so each ExpW image is the
    same small JPEG (100x100, every box inside it).
    Labels follow the paper's class frequencies; ``ANNOTATED`` of the lines are labelled and
    ``WITH_IMAGE`` of those have a face crop. Returns the counts written.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    lengths = rng.multinomial(lines, rng.dirichlet(np.full(videos, 20.0)))
    train_videos = round(videos * TRAIN_VIDEO_SHARE)
    affwild2 = root / "affwild2"
    images = 0
    steps = range(videos)
    if progress:
        steps = track(steps, description="Writing the full-scale layout", transient=True)
    for v in steps:
        n = int(lengths[v])
        labels = rng.choice(7, n, p=CLASS_FREQUENCIES)
        labels[rng.random(n) >= ANNOTATED] = -1
        split = "train" if v < train_videos else "val"
        name = f"{v:03d}"
        write_annotation_file(annotation_dir(affwild2, "abaw2020", split) / f"{name}.txt", labels)
        folder = affwild2 / FRAMES_DIR / name
        folder.mkdir(parents=True)
        frames = np.flatnonzero((labels >= 0) & (rng.random(n) < WITH_IMAGE)) + 1
        for frame in frames.tolist():
            os.close(os.open(folder / frame_file(frame), os.O_CREAT | os.O_WRONLY, 0o644))
        images += len(frames)

    expw = root / "expw"
    (expw / IMAGES_DIR).mkdir(parents=True)
    image_count = max(1, round(expw_faces / EXPW_FACES_PER_IMAGE))
    owners = np.sort(rng.integers(0, image_count, expw_faces))
    expressions = rng.choice(7, expw_faces, p=CLASS_FREQUENCIES[list(EXPW_TO_ABAW)])
    faces, face_id = [], 0
    for k, (owner, code) in enumerate(zip(owners.tolist(), expressions.tolist(), strict=True)):
        face_id = face_id + 1 if k and owners[k - 1] == owner else 0
        faces.append(ExpWFace(f"{owner:06d}.jpg", face_id, 10, 10, 90, 90, 90.0, code))
    write_label_list(expw / LABEL_FILE, faces)
    jpeg = cv2.imencode(".jpg", np.full((100, 100, 3), 128, np.uint8))[1].tobytes()
    for owner in np.unique(owners).tolist():
        (expw / IMAGES_DIR / f"{owner:06d}.jpg").write_bytes(jpeg)
        images += 1
    return {"videos": videos, "lines": lines, "image_files": images, "expw_faces": expw_faces}


class IndexWalk(Dataset):
    """What ``FaceDataset`` reads from the index per sample (path, label), without decoding: the
    full-scale layout's images are empty files. Every ``every``-th sample a worker also reports
    its private memory (pages it does not share with the main process), in MB, else -1."""

    def __init__(self, index: FrameIndex, every: int = 1024) -> None:
        self.index, self.every, self.calls = index, every, 0

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[int, int, int, int, float]:
        self.calls += 1
        memory = memory_mb() if self.calls % self.every == 1 else None
        worker = torch.utils.data.get_worker_info()
        return (
            len(self.index.image_path(i)),
            int(self.index.labels[i]),
            i,
            -1 if worker is None else worker.id,
            -1.0 if memory is None else memory["private"],
        )


def start_datamodule(options: dict[str, Any], workers: int, walk: bool) -> dict[str, Any]:
    """A run's start: the DataModule's indexes, timed, and the resident memory they added.

    The cached load runs in a new process (``_in_new_process``), so that its time and memory are
    a new run's. With ``walk``, DataLoader workers then walk one epoch of the training index,
    reporting their private memory (pages not shared with the main process) as they go.
    """
    before = memory_mb()
    start = time.perf_counter()
    dm = ExpressionDataModule(**options)
    train, val = len(dm.train_index), len(dm.val_index)
    seconds = time.perf_counter() - start
    after = memory_mb()
    result = {"seconds": seconds, "train": train, "val": val}
    if before and after:
        result |= {"rss_mb": after["rss"], "datamodule_mb": after["rss"] - before["rss"]}
    if walk and workers > 0:
        sampler = EpochShuffleSampler(train, 256)
        walker = IndexWalk(dm.train_index)
        loader = DataLoader(
            walker,
            batch_size=256,
            sampler=sampler,
            num_workers=workers,
            worker_init_fn=exit_with_parent,
        )
        first: dict[int, float] = {}
        last: dict[int, float] = {}
        for *_, worker, private in loader:
            for w, mb in zip(worker.tolist(), private.tolist(), strict=True):
                if mb >= 0:
                    first.setdefault(w, mb)
                    last[w] = mb
        if first:
            result |= {
                "worker_start_mb": max(first.values()),
                "worker_end_mb": max(last.values()),
                "worker_growth_mb": max(last[w] - first[w] for w in first),
                "walked": len(sampler),
            }
    return result


_CHILD = (
    f"import json, sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); "
    "from bench import start_datamodule; "
    "print(json.dumps(start_datamodule(*json.loads(sys.argv[1]))))"
)


def _in_new_process(options: dict[str, Any], workers: int, walk: bool) -> dict[str, Any]:
    """``start_datamodule`` in a new interpreter: a run's start, with nothing imported or cached."""
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps([options, workers, walk])],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the index measurement failed:\n{done.stderr}")
    return json.loads(done.stdout.splitlines()[-1])


def memory_mb(pid: int | str = "self") -> dict[str, float] | None:
    """Resident and private (not shared) memory of a process in MB, from Linux's smaps_rollup."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    kb = {}
    for line in text.splitlines()[1:]:
        key, value = line.split(":", 1)
        kb[key] = int(value.split()[0])
    return {
        "rss": kb["Rss"] / 1024,
        "private": (kb["Private_Clean"] + kb["Private_Dirty"]) / 1024,
    }


def bench_index(work: Path, scale: Scale, workers: int, quiet: bool) -> dict:
    root = work / "fullscale"
    marker = root / "layout.json"
    wanted = {"videos": scale.videos, "lines": scale.lines, "expw_faces": scale.expw_faces}
    layout = json.loads(marker.read_text()) if marker.is_file() else None
    if layout is None or {k: layout[k] for k in wanted} != wanted:
        shutil.rmtree(root, ignore_errors=True)
        layout = write_fullscale_layout(root, **wanted, progress=not quiet)
        marker.write_text(json.dumps(layout))
    cache = work / "index-cache"
    shutil.rmtree(cache, ignore_errors=True)
    options = dict(
        affwild2_dir=str(root / "affwild2"),
        expw_dir=str(root / "expw"),
        index_cache_dir=str(cache),
    )
    status = Console(stderr=True, quiet=quiet)
    with status.status("Building the full-scale index (cache empty)"):
        built = start_datamodule(options, workers, walk=False)
    with status.status("Loading the cached index in a new process, walking one epoch"):
        cached = _in_new_process(options, workers, walk=True)
    return layout | {
        "train": cached["train"],
        "val": cached["val"],
        "build_s": built["seconds"],
        "cached_load_s": cached["seconds"],
        **{k: v for k, v in cached.items() if k.endswith("mb") or k == "walked"},
    }


# -- training step -------------------------------------------------------------------------------


def bf16_support(device: torch.device) -> str | None:
    """None when bf16 arithmetic is native on ``device``; otherwise why it is not measured."""
    if device.type == "cuda":
        return None if torch.cuda.is_bf16_supported() else "this GPU has no bf16"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "cannot tell whether this CPU has bf16 instructions"
    if "avx512_bf16" in flags or "amx_bf16" in flags:
        return None
    return "this CPU has no bf16 instructions (avx512_bf16 / amx_bf16)"


def sgd_step(device: torch.device, bf16: bool, compiled: bool):
    """One training step of the paper's module on ``device`` (class-weighted loss, SGD with its
    two learning rates; bf16: autocast and channels_last; compiled: ``torch.compile``), as a
    function of a batch's uint8 images and labels already on the device."""
    from ferlit.training.module import ExpressionModule

    module = ExpressionModule(backbone=BACKBONE, input_size=IMAGE_SIZE, channels_last=bf16)
    module = module.to(device).train()
    optimizer = module.configure_optimizers()
    forward = torch.compile(module) if compiled else module

    def step(images: torch.Tensor, labels: torch.Tensor) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = module.loss(forward(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def training_rate(device: torch.device, batch_size: int, steps: int, bf16: bool) -> float:
    """Images/s of SGD steps of the paper's module (class-weighted loss, two learning rates), from
    the median step time."""
    step = sgd_step(device, bf16, compiled=False)
    images = torch.randint(0, 256, (batch_size, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=torch.uint8)
    images, labels = images.to(device), torch.randint(0, 7, (batch_size,), device=device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    step(images, labels)  # first-step allocations and kernel selection
    sync()
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        step(images, labels)
        sync()
        seconds.append(time.perf_counter() - start)
    return batch_size / float(np.median(seconds))  # a step stalled by other work does not count


def bench_training(scale: Scale, quiet: bool, threads: int | None = None) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if threads is not None:
        torch.set_num_threads(threads)
    batch, steps = scale.train_batch, scale.train_steps
    if device.type == "cuda" and scale is FULL:
        batch, steps = GPU_TRAIN_BATCH, GPU_TRAIN_STEPS
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    result: dict[str, Any] = {"device": name, "batch": batch, "steps": steps}
    status = Console(stderr=True, quiet=quiet)
    with status.status("Training steps, fp32"):
        result["fp32"] = training_rate(device, batch, steps, bf16=False)
    why_not = bf16_support(device)
    if why_not is None:
        with status.status("Training steps, bf16-mixed + channels_last"):
            result["bf16"] = training_rate(device, batch, steps, bf16=True)
    else:
        result["bf16"], result["bf16_missing"] = None, why_not
    return result


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                return f"{name}, {counted(torch.get_num_threads(), 'thread')}"
    except OSError:
        pass
    return f"CPU, {counted(torch.get_num_threads(), 'thread')}"


# -- the whole pipeline (--gpu) ------------------------------------------------------------------

#: Faces of one training epoch: Aff-Wild2 train + ExpW in Cafarelli et al. (2020).
EPOCH_FACES = 1_004_523
#: Untimed steps before the timed ones: the first step allocates and selects kernels, and with
#: torch.compile the first two compile (forward and backward) and may recompile once.
PIPELINE_WARMUP = 3


def _cycle(loader: DataLoader):
    """The loader's batches without end, one epoch after another (persistent workers kept)."""
    while True:
        yield from loader


def pipeline_loader(work: Path, augment_on: str, batch: int, workers: int) -> DataLoader:
    """ferlit's training loader over the packed sample data, as ``fit`` builds it (pinned memory
    where CUDA is, ``data.augment_on`` as asked)."""
    return ExpressionDataModule(
        affwild2_dir=str(work / "sample" / "affwild2"),
        packed_dir=str(work / "pack"),
        image_size=IMAGE_SIZE,
        batch_size=batch,
        num_workers=workers,
        index_cache_dir=str(work / "cache"),
        augment_on=augment_on,
    ).train_dataloader()


def loader_only_rate(loader: DataLoader, batches: int) -> float:
    """Faces/s the loader delivers to the main process, after its first batch (worker start-up)."""
    source = _cycle(loader)
    next(source)
    start, faces = time.perf_counter(), 0
    for _ in range(batches):
        faces += len(next(source)[0])
    return faces / (time.perf_counter() - start)


def gpu_utilisation() -> tuple[int | None, str | None]:
    """``torch.cuda.utilization()`` (NVML's percentage of the last sample period), or why not."""
    if importlib.util.find_spec("pynvml") is None:
        return None, "unavailable (pynvml is not installed)"
    try:
        return int(torch.cuda.utilization()), None
    except Exception as e:  # NVML missing from the driver, or no permission
        return None, f"unavailable ({type(e).__name__}: {e})"


def pipeline_rate(
    loader: DataLoader,
    augmentation,
    device: torch.device,
    steps: int,
    bf16: bool,
    compiled: bool,
) -> dict[str, Any]:
    """Faces/s of SGD steps of the paper's module fed by ``loader``: each batch is copied to
    ``device`` (non-blocking, from pinned memory), augmented there when ``augmentation`` (a
    DeviceAugmentation: planned on the host, applied on the device) is given, then forward,
    class-weighted loss, backward and step.

    Timed from a synchronised device after ``PIPELINE_WARMUP`` steps (one on a CPU) to a synchronised device
    after ``steps`` more, so the loader's waits count. With CUDA, also the peak memory and the
    mean GPU utilisation sampled after each timed step.
    """
    cuda = device.type == "cuda"
    train = sgd_step(device, bf16, compiled)

    def step(batch) -> None:
        images = batch[0].to(device, non_blocking=True)
        labels = batch[1].to(device, non_blocking=True)
        if augmentation is not None:
            # As fit does (ExpressionDataModule.on_before_batch_transfer): planned on the host
            # from the host's sample numbers while the images are copied, then applied with no
            # host synchronisation. The epoch changes the draws, not the cost: 0 throughout.
            plan = augmentation.plan(batch[2], 0)
            plan = (plan.pin_memory() if cuda else plan).moved_to(device)
            images = augmentation.apply(images, plan)
        train(images, labels)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    batches = _cycle(loader)
    for _ in range(PIPELINE_WARMUP if cuda else 1):
        step(next(batches))
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    faces, busy = 0, []
    start = time.perf_counter()
    for _ in range(steps):
        batch = next(batches)
        faces += len(batch[0])
        step(batch)
        if cuda:
            busy.append(gpu_utilisation()[0])
    sync()
    result: dict[str, Any] = {"rate": faces / (time.perf_counter() - start)}
    if cuda:
        result["peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        shown = [b for b in busy if b is not None]
        result["utilisation"] = sum(shown) / len(shown) if shown else None
    return result


def bench_pipeline(work: Path, scale: Scale, workers: int, quiet: bool) -> dict[str, Any]:
    """The whole training pipeline: loader-only rates and each (precision, compile, augmentation
    place) configuration the device allows; what it does not allow is listed as skipped."""
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        batch, steps = (GPU_TRAIN_BATCH, GPU_TRAIN_STEPS) if scale is FULL else (8, 2)
        name = torch.cuda.get_device_name(device)
        # As fit (experiments/trainer/cafarelli2020.yaml, benchmark: true): cuDNN times its
        # convolution algorithms in the untimed warm-up steps and keeps the fastest.
        torch.backends.cudnn.benchmark = True
    else:
        batch, steps = scale.train_batch, 1
        name = _cpu_name()
    _packed_sample(work, scale, workers, quiet)
    status = Console(stderr=True, quiet=quiet)
    loaders = {where: pipeline_loader(work, where, batch, workers) for where in ("cpu", "device")}
    loader_batches = max(2, scale.loader_images // batch)
    result: dict[str, Any] = {"device": name, "batch": batch, "steps": steps, "skipped": []}
    result["loader"] = {}
    for where, loader in loaders.items():
        with status.status(f"Loader only, augmentation on {where}"):
            result["loader"][where] = loader_only_rate(loader, loader_batches)
    augmentation = DeviceAugmentation(Augmentation(), seed=0)  # the paper's flip and jitter
    precisions = ["fp32"]
    why_not_bf16 = bf16_support(device) if cuda else "no CUDA"
    if why_not_bf16 is None:
        precisions.append("bf16")
    else:
        result["skipped"].append(f"bf16-mixed + channels_last: {why_not_bf16}")
    compile_options = [False, True] if cuda else [False]
    if not cuda:
        result["skipped"] += [
            "torch.compile: no CUDA (compiling for this CPU says nothing of a GPU's speed)",
            f"batch {GPU_TRAIN_BATCH}, {GPU_TRAIN_STEPS} steps: no CUDA (one fp32 step of "
            f"batch {batch} instead)",
            "GPU utilisation and peak memory: no CUDA",
        ]
    result["runs"] = []
    for precision in precisions:
        for compiled in compile_options:
            for where in ("cpu", "device"):
                what = f"{precision}, {'compiled' if compiled else 'eager'}, augmentation {where}"
                with status.status(f"Pipeline: {what}"):
                    run = pipeline_rate(
                        loaders[where],
                        augmentation if where == "device" else None,
                        device,
                        steps,
                        bf16=precision == "bf16",
                        compiled=compiled,
                    )
                result["runs"].append(
                    {"precision": precision, "compiled": compiled, "augment_on": where} | run
                )
                if cuda:  # the last run's model is gone: its cached blocks are not the next's
                    torch.cuda.empty_cache()
    if cuda:
        result["utilisation_missing"] = gpu_utilisation()[1]
    return result


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {seconds % 60:02.0f} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def pipeline_report(result: dict[str, Any], workers: int) -> list[str]:
    """The lines of ``--gpu``: faces/s of each configuration and the 1M-face epoch it projects."""

    def rate(x: float) -> str:
        return f"{x:>9,.0f} faces/s"

    lines = [
        f"Whole training pipeline, SE-ResNet-50 at {IMAGE_SIZE}x{IMAGE_SIZE} on "
        f"{result['device']}: packed sample data, {workers} workers, batch {result['batch']}, "
        f"{counted(result['steps'], 'timed step')}",
        f"  loader only, augmentation on cpu      {rate(result['loader']['cpu'])}",
        f"  loader only, augmentation on device   {rate(result['loader']['device'])}"
        "   (workers copy; flip + jitter left to the device)",
    ]
    for run in result["runs"]:
        name = "fp32" if run["precision"] == "fp32" else "bf16-mixed + channels_last"
        name += ", torch.compile" if run["compiled"] else ", eager"
        line = (
            f"  {name:<38} aug {run['augment_on']:<6} {rate(run['rate'])}   1M-face epoch "
            f"({EPOCH_FACES:,}) {_duration(EPOCH_FACES / run['rate'])}"
        )
        if "peak_mb" in run:
            line += f"   peak {run['peak_mb'] / 1024:.1f} GiB"
            if run["utilisation"] is not None:
                line += f"   GPU busy {run['utilisation']:.0f}%"
        lines.append(line)
    if result.get("utilisation_missing"):
        lines.append(f"  GPU utilisation: {result['utilisation_missing']}")
    for why in result["skipped"]:
        lines.append(f"  skipped: {why}")
    return lines


# -- the report ----------------------------------------------------------------------------------


def report(loaders: dict, index: dict, training: dict, workers: int, batch: int) -> list[str]:
    """The lines ``python benchmarks/bench.py`` prints: every figure, and each target met or not."""

    def check(ok: bool) -> str:
        return "met" if ok else "NOT MET"

    def rate(x: float) -> str:
        return f"{x:>9,.0f} images/s"

    lines = [
        f"Loader throughput, training augmentation: {workers} workers, batch {batch}, "
        f"{loaders['images']:,} images of the sample data's {loaders['frames']:,} Aff-Wild2 "
        f"train frames ({IMAGE_SIZE}x{IMAGE_SIZE} JPEG)",
        f"  (a) naive: PIL + torchvision, default DataLoader  {rate(loaders['naive'])}",
        f"  (b) ferlit JPEG path (OpenCV + albumentations)    {rate(loaders['jpeg'])}",
        f"  (c) ferlit packed path (memory-mapped uint8)      {rate(loaders['packed'])}",
        f"  (d) ceiling: packed uint8 copies, no augmentation {rate(loaders['ceiling'])}",
        f"  (e) packed path, augment_on device (loader side)  {rate(loaders['packed_device'])}",
        f"  (b)/(a) = {loaders['jpeg_ratio']:.2f}x   target >= {TARGET_JPEG_RATIO}x: "
        f"{check(loaders['jpeg_ratio'] >= TARGET_JPEG_RATIO)}",
        f"  (c)/(a) = {loaders['packed_ratio']:.2f}x   target >= {TARGET_PACKED_RATIO}x: "
        f"{check(loaders['packed_ratio'] >= TARGET_PACKED_RATIO)}",
        f"  (c) per worker core                               {rate(loaders['packed_per_worker'])}",
        "",
        f"Index at full scale: {index['videos']:,} videos, {index['lines']:,} annotation lines, "
        f"{index['image_files']:,} (empty) image files, {index['expw_faces']:,} ExpW faces",
        f"  train {index['train']:,} samples (Aff-Wild2 train + ExpW), val {index['val']:,}",
        f"  index build, cache empty          {index['build_s']:8.2f} s",
        f"  cached load in a new process      {index['cached_load_s']:8.2f} s   target < "
        f"{TARGET_CACHED_LOAD_S:.0f} s: {check(index['cached_load_s'] < TARGET_CACHED_LOAD_S)}",
    ]
    if "datamodule_mb" in index:
        lines.append(
            f"  DataModule holding the index      {index['datamodule_mb']:8.1f} MB resident   "
            f"target < {TARGET_DATAMODULE_MB:.0f} MB: "
            f"{check(index['datamodule_mb'] < TARGET_DATAMODULE_MB)}"
        )
        lines.append(
            f"    (the whole process: {index['rss_mb']:.0f} MB, most of it torch and Lightning)"
        )
    else:
        lines.append("  DataModule resident memory: not measured (needs Linux /proc)")
    if "worker_growth_mb" in index:
        lines.append(
            f"  DataLoader workers over one epoch ({index['walked']:,} samples): private memory "
            f"{index['worker_start_mb']:.1f} -> {index['worker_end_mb']:.1f} MB, growth "
            f"{index['worker_growth_mb']:+.1f} MB   target < {TARGET_WORKER_GROWTH_MB:.0f} MB: "
            f"{check(index['worker_growth_mb'] < TARGET_WORKER_GROWTH_MB)}"
        )
    else:
        lines.append("  DataLoader worker memory: not measured (needs Linux /proc and workers)")

    lines += [
        "",
        f"Training step, SE-ResNet-50 at {IMAGE_SIZE}x{IMAGE_SIZE} on {training['device']} "
        f"(batch {training['batch']}, {counted(training['steps'], 'step')})",
        f"  fp32                              {rate(training['fp32'])}",
    ]
    if training["bf16"] is not None:
        lines.append(f"  bf16-mixed + channels_last        {rate(training['bf16'])}")
    else:
        lines.append(
            f"  bf16-mixed + channels_last        not measured: {training['bf16_missing']}"
        )
    fastest = max(r for r in (training["fp32"], training["bf16"]) if r is not None)
    cores = math.ceil(fastest / loaders["packed_per_worker"])
    lines.append(f"  worker cores to feed {fastest:,.0f} images/s from the packed path: {cores}")
    return lines


#: The argparse spellings of before the bench used jsonargparse (issue 14), refused naming the
#: option that replaced each.
RENAMED = {"--work-dir": "--work_dir", "--batch-size": "--batch_size"}


def build_parser() -> ArgumentParser:
    """The bench's options, in the spelling of every ferlit command (jsonargparse)."""
    parser = ArgumentParser(
        prog="python benchmarks/bench.py",
        allow_abbrev=False,  # options matched whole: --work is no --work_dir
        description="Measure loader throughput, index build and load, and training-step speed "
        "on this machine, on data generated in a temporary folder.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="seconds, not minutes; figures meaningless"
    )
    parser.add_argument(
        "--gpu",
        action="store_true",
        help="measure the whole training pipeline instead (packed loader -> device -> SE-ResNet-50 "
        "forward and backward; batch 256, fp32 and bf16, eager and compiled, augmentation on cpu "
        "and device) where CUDA is; without CUDA, what the CPU can, naming what it skipped",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=min(os.cpu_count() or 1, 8),
        help="DataLoader workers of every loader (default: the cores, at most 8)",
    )
    parser.add_argument(
        "--batch_size", type=int, default=64, help="loader batch size (64, the paper's)"
    )
    parser.add_argument(
        "--work_dir",
        type=str | None,
        default=None,
        help="keep the generated data here and reuse it on the next run (default: a temporary "
        "folder, removed)",
    )
    parser.add_argument(
        "--threads",
        type=int | None,
        default=None,
        help="intra-op threads of the training step (default: torch's, one per core; --quick: 1, "
        "since OpenMP threads spin-waiting on cores busy with other work slow it tenfold)",
    )
    parser.add_argument(
        "--json", type=str | None, default=None, help="also write every figure to this JSON file"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python benchmarks/bench.py``; bad options and folders end with ``error: ...``, exit 2."""
    try:
        return _main(sys.argv[1:] if argv is None else list(argv))
    except FerlitError as e:
        print(f"error: {user_message(e)}", file=sys.stderr)
        return 2


def _main(argv: list[str]) -> int:
    for token in argv:
        name = token.split("=", 1)[0]
        if name in RENAMED:
            raise ConfigError(f"{name}: now {RENAMED[name]}")
    args = build_parser().parse_args(argv)
    if args.gpu and any(t.split("=", 1)[0] == "--batch_size" for t in argv):
        raise ConfigError(
            f"--batch_size is the loader figures' batch; --gpu uses batch {GPU_TRAIN_BATCH} on "
            "CUDA (the issue's) and the quick or CPU step's batch otherwise: drop --batch_size"
        )
    args.work_dir = None if args.work_dir is None else Path(args.work_dir)
    args.json = None if args.json is None else Path(args.json)
    if args.workers < 0 or args.batch_size <= 0:
        raise ConfigError("--workers must be >= 0 and --batch_size positive")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {args.threads}")
    # Destinations checked before minutes of measuring, not when the figures are written.
    if args.work_dir is not None:
        if args.work_dir.exists() and not args.work_dir.is_dir():
            raise ConfigError(f"--work_dir {args.work_dir}: is a file; expected a folder")
        check_creatable(args.work_dir, "--work_dir")
    if args.json is not None:
        if args.json.is_dir():
            raise ConfigError(f"--json {args.json}: is a folder; expected a file name")
        if not args.json.parent.is_dir():
            raise ConfigError(
                f"--json {args.json}: the folder {args.json.parent} does not exist; create it first"
            )
        check_creatable(args.json.parent, "--json")
    scale = QUICK if args.quick else FULL
    quiet = args.quick
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="ferlit-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.gpu:
        try:
            if args.threads is not None or args.quick:
                torch.set_num_threads(args.threads or 1)
            pipeline = bench_pipeline(work, scale, args.workers, quiet)
        finally:
            if args.work_dir is None:
                shutil.rmtree(work, ignore_errors=True)
        for line in pipeline_report(pipeline, args.workers):
            print(line)
        if args.json is not None:
            figures = {"workers": args.workers, "quick": args.quick, "pipeline": pipeline}
            with atomic_write(args.json, "w") as file:
                file.write(json.dumps(figures, indent=2) + "\n")
        return 0
    try:
        loaders = bench_loaders(work, scale, args.workers, args.batch_size, quiet)
        index = bench_index(work, scale, args.workers, quiet)
        threads = args.threads if args.threads is not None else (1 if args.quick else None)
        training = bench_training(scale, quiet, threads)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    for line in report(loaders, index, training, args.workers, args.batch_size):
        print(line)
    if args.json is not None:
        figures = {"workers": args.workers, "batch_size": args.batch_size, "quick": args.quick}
        figures |= {"loaders": loaders, "index": index, "training": training}
        with atomic_write(args.json, "w") as file:
            file.write(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    with quiet_closed_stdout():
        status = main()
    sys.exit(status)
