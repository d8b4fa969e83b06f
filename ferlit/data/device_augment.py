"""The training augmentation run batched on the model's device (``data.augment_on: device``).

The CPU path (``ferlit.data.transforms``) spends most of a loader worker's time in the colour
jitter (issue 17: ~170 us a face, hue dominating), so on a GPU machine with a few cores per GPU
the loader, not the GPU, sets the pace. With ``augment_on: device`` the workers deliver resized,
unaugmented uint8 faces and :class:`DeviceAugmentation` applies the same flip and colour jitter
to the whole batch after it reaches the device, before the model's own preprocessing.

Same definitions as the CPU path: albumentations 2's ``ColorJitter`` applies torchvision's
``adjust_brightness`` (x * b), ``adjust_contrast`` (blend with the image's mean ITU-R 601 grey
level), ``adjust_saturation`` (blend with the pixel's grey level) and ``adjust_hue`` (shift of
the HSV hue, a fraction of the circle), each factor uniform in its range, in a random order per
image, after a horizontal flip with probability ``hflip``. Here every image gets its own factors
and order. The CPU path rounds to uint8 after each step (and its hue is cv2's 180-level uint8
HSV); this one rounds once, at the end, so single pixels may differ by a few levels while the
distribution of each parameter is the same (``tests/test_device_augment.py``).

Seeding: each sample's parameters are a hash of (seed, epoch, sample number), as the CPU path's
generator is seeded from (seed, epoch, sample) (``EpochSeededDataset``): the same whatever the
batch it falls in, the number of workers or processes, or whether the run was resumed (the hash:
lowbias32, from Chris Wellons' integer-hash search).

Why not a library's batched jitter (the issue asks for one unless there is a reason): kornia's
``ColorJitter`` draws per-image factors but one order of the four operations for the whole batch
(``ColorJitterGenerator``: ``order`` of shape (4,), a ``randperm(4)``), and
``torchvision.transforms.v2.ColorJitter`` one set of factors and one order per call, so a batch
would not be distributed as the CPU path's faces, each with its own order. Neither lets the
parameters be a function of (seed, epoch, sample), which resume and any number of workers or
processes need (kornia: "not reproducible across different devices and dtypes"). The colour
operations themselves are torchvision's definitions; the RGB <-> HSV conversions are
torchvision's own (``_rgb_to_hsv`` / ``_hsv_to_rgb``, private: pinned by the torchvision==0.29.1
of pyproject.toml and checked against albumentations in ``tests/test_device_augment.py``).

Plan on the host, apply on the device (issue 17, "keep a GPU fed"): a training step of a fed GPU
must make no host synchronisation, and choosing each jitter step's rows on the device (a boolean
mask or ``nonzero``, whose output size the host must wait for) made 16 per batch. The sample
numbers and the epoch are on the host before the batch is moved, so :meth:`DeviceAugmentation.plan`
computes everything there, on the CPU: flips, factors, and for each of the 4 jitter steps the
batch rows sorted by the operation they get, with the count per operation as Python ints. The
plan travels with the batch (``ExpressionDataModule.on_before_batch_transfer``) and
:meth:`DeviceAugmentation.apply` only slices it with host ints and gathers and scatters rows with
long indices (``index_select`` / ``index_copy_``), none of which waits for the device
(``tests/test_device_augment.py`` checks with ``tests/host_sync.py``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torchvision.transforms.v2.functional._color import _hsv_to_rgb, _rgb_to_hsv

from ferlit.data.transforms import Augmentation

_MASK32 = 0xFFFFFFFF
#: The ITU-R 601 luma weights torchvision's and cv2's RGB -> grey conversions use.
_GREY = (0.299, 0.587, 0.114)
#: Uniform draws per sample: flip, brightness, contrast, saturation, hue, then 4 order keys.
_DRAWS = 9
#: The jitter operations by number, as in a sample's order (``ColorJitter``'s numbering).
_FACTORS = ("brightness", "contrast", "saturation", "hue")


def _lowbias32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (lowbias32: bias ~0.17 from an ideal one) on int64 tensors.

    Values stay in [0, 2**32); a product may pass 2**63 and wrap, which leaves its low 32 bits
    (the only ones kept) right.
    """
    x = x & _MASK32
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _MASK32
    return x ^ (x >> 16)


def uniforms(seed: int, epoch: int, samples: torch.Tensor, draws: int = _DRAWS) -> torch.Tensor:
    """``len(samples)`` x ``draws`` numbers uniform in [0, 1), each a function of
    (seed, epoch, sample, draw) alone.

    ``seed`` may be any integer, as the CPU path's generators take (``data.seed`` has no upper
    bound): the words above its first 64 bits are hashed in one 32-bit word at a time (a seed
    below 2**64 gives the numbers it always gave)."""
    samples = samples.to(torch.int64)
    high = seed >> 32
    h = _lowbias32(torch.full_like(samples, seed & _MASK32) ^ (high & _MASK32))
    while high >> 32 not in (0, -1):  # a seed past 64 bits (or below -2**63)
        high >>= 32
        h = _lowbias32(h ^ (high & _MASK32))
    h = _lowbias32(h ^ (epoch & _MASK32))
    h = _lowbias32(h ^ (samples & _MASK32))
    h = _lowbias32(h ^ (samples >> 32))
    k = torch.arange(draws, device=samples.device, dtype=torch.int64)
    bits = _lowbias32(h[:, None] + (k * 0x9E3779B9 + 1)[None, :])
    return (bits >> 8).to(torch.float32) / float(1 << 24)  # 24 bits: exact in float32


@dataclass
class AugmentationPlan:
    """A batch's augmentation, computed on the host: what :meth:`DeviceAugmentation.apply` needs,
    as tensors (moved with the batch) and Python ints (read without asking the device).

    Lightning's batch transfer moves a dataclass's tensor fields and leaves its other fields as
    they are (``lightning_utilities.apply_to_collection``); there is deliberately no ``to``
    method, which would make the transfer call it without ``non_blocking``.
    """

    #: (N,) bool: the faces to flip horizontally.
    flip: torch.Tensor
    #: (4, N) int64: for each jitter step, the batch rows sorted (stably) by the operation they
    #: get there: brightness rows first, then contrast, saturation, hue.
    rows: torch.Tensor
    #: (4, N) float32: ``factors[s, i]`` is the factor of row ``rows[s, i]``'s operation.
    factors: torch.Tensor
    #: For each step, how many rows get each operation (brightness, contrast, saturation, hue).
    counts: tuple[tuple[int, int, int, int], ...]

    def pin_memory(self) -> AugmentationPlan:
        """The plan in page-locked host memory, so its copy to a GPU does not block the host."""
        return self._map(lambda t: t.pin_memory())

    def moved_to(self, device: torch.device | str) -> AugmentationPlan:
        """The plan on ``device``, copied without blocking the host (pin it first for a truly
        asynchronous copy from the host to a GPU)."""
        device = torch.device(device)
        non_blocking = device.type not in ("cpu", "mps")  # as Lightning's own transfer
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def _map(self, f) -> AugmentationPlan:
        return dataclasses.replace(
            self, flip=f(self.flip), rows=f(self.rows), factors=f(self.factors)
        )


class DeviceAugmentation:
    """Flip and colour jitter for batches of uint8 faces (N x 3 x H x W) on any device."""

    def __init__(self, augmentation: Augmentation, seed: int) -> None:
        self.augmentation = augmentation
        self.seed = int(seed)

    def parameters(self, samples: torch.Tensor, epoch: int) -> dict[str, torch.Tensor]:
        """Each sample's flip (bool), four factors and jitter order (N x 4, a permutation of
        brightness 0, contrast 1, saturation 2, hue 3), the ranges of ``ColorJitter``."""
        a = self.augmentation
        u = uniforms(self.seed, int(epoch), samples)

        def span(v: torch.Tensor, low: float, high: float) -> torch.Tensor:
            return low + (high - low) * v

        return {
            "flip": u[:, 0] < a.hflip,
            "brightness": span(u[:, 1], max(0.0, 1 - a.brightness), 1 + a.brightness),
            "contrast": span(u[:, 2], max(0.0, 1 - a.contrast), 1 + a.contrast),
            "saturation": span(u[:, 3], max(0.0, 1 - a.saturation), 1 + a.saturation),
            "hue": span(u[:, 4], -a.hue, a.hue),
            "order": torch.argsort(u[:, 5:9], dim=1),
        }

    def plan(self, samples: torch.Tensor, epoch: int) -> AugmentationPlan:
        """The augmentation of the batch of these sample numbers (the loader's third element)
        in this training epoch, computed on the CPU (``samples`` are moved there first: pass the
        host's copy, as the DataModule does, or this waits for the device)."""
        p = self.parameters(samples.detach().to("cpu"), epoch)
        by_step = p["order"].T.contiguous()  # (4, N): the operation of each row at each step
        rows = torch.argsort(by_step, dim=1, stable=True)  # rows with op 0, then 1, 2, 3
        ops = by_step.gather(1, rows)
        factors = torch.stack([p[k] for k in _FACTORS], dim=1)  # (N, 4), by operation
        counts = tuple(
            tuple(int(c) for c in torch.bincount(step, minlength=4).tolist()) for step in by_step
        )
        return AugmentationPlan(p["flip"], rows, factors[rows, ops], counts)

    def apply(self, images: torch.Tensor, plan: AugmentationPlan) -> torch.Tensor:
        """The augmented batch, uint8 like ``images``, on their device: ``plan`` (from
        :meth:`plan`, on the same device) is read with host ints only, so nothing here waits
        for the device."""
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                f"device augmentation expects uint8 N x 3 x H x W faces, got {images.dtype} "
                f"{tuple(images.shape)}"
            )
        if plan.flip.shape != images.shape[:1]:
            raise ValueError(
                f"an augmentation plan of {len(plan.flip)} faces for a batch of {len(images)}"
            )
        if len(images) == 0:
            return images
        x = images.to(torch.float32) / 255.0
        x = torch.where(plan.flip[:, None, None, None], x.flip(-1), x)
        a = self.augmentation
        active = (a.brightness > 0, a.contrast > 0, a.saturation > 0, a.hue > 0)
        for step, counts in enumerate(plan.counts):
            start = 0
            for op, count in enumerate(counts):
                end = start + count
                if active[op] and count:
                    rows = plan.rows[step, start:end]
                    factors = plan.factors[step, start:end]
                    x.index_copy_(0, rows, _OPS[op](x.index_select(0, rows), factors))
                start = end
        return (x * 255.0).round_().clamp_(0, 255).to(torch.uint8)

    def __call__(self, images: torch.Tensor, samples: torch.Tensor, epoch: int) -> torch.Tensor:
        """The augmented batch, uint8 like ``images``; ``samples`` are the batch's sample
        numbers (the loader's third element), ``epoch`` the training epoch. Plans on the host
        and applies on the images' device: the convenience entry (tests, benchmarks); a
        training step plans before the batch transfer instead."""
        return self.apply(images, self.plan(samples, epoch).moved_to(images.device))


def _grey(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    return (_GREY[0] * r + _GREY[1] * g + _GREY[2] * b).unsqueeze(1)


def _brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (x * f[:, None, None, None]).clamp_(0, 1)


def _contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    f = f[:, None, None, None]
    mean = _grey(x).mean(dim=(1, 2, 3), keepdim=True)
    return (x * f + mean * (1 - f)).clamp_(0, 1)


def _saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    f = f[:, None, None, None]
    return (x * f + _grey(x) * (1 - f)).clamp_(0, 1)


def _hue(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    hsv = _rgb_to_hsv(x)
    h, s, v = hsv.unbind(1)
    h = (h + f[:, None, None]).remainder(1.0)
    return _hsv_to_rgb(torch.stack((h, s, v), dim=1))


_OPS = (_brightness, _contrast, _saturation, _hue)
