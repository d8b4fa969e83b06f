"""VGGFace2 SE-ResNet-50 weights into timm's ``legacy_seresnet50``.

Cafarelli et al. (ABAW 2020) start from the Oxford VGG ``senet50_ft`` model (Cao et al., VGGFace2,
FG 2018: SE-ResNet-50 pre-trained on MS-Celeb-1M, fine-tuned on VGGFace2's 8631 training
identities). Users hold it in one of two forms:

* the PyTorch port's pickle (cydonia999/VGGFace2-pytorch, ``senet50_ft_weight.pkl``): a dict of
  name -> numpy array named after that port's ``models/senet.py`` (``conv1``, ``bn1``,
  ``layer{1-4}.{b}.conv{1-3}`` / ``bn{1-3}``, the SE block as ``conv4`` (squeeze) and ``conv5``
  (excite), ``downsample.{0,1}`` and the 8631-way ``fc``);
* a plain state dict of a timm ``legacy_seresnet50`` (``.pth``/``.pt``/``.ckpt``/``.safetensors``),
  possibly wrapped in ``{"state_dict": ...}`` / ``{"model": ...}`` or prefixed ``module.`` etc.

timm's legacy SENet is the architecture of the Caffe model (stride in the first 1x1 conv of a
bottleneck, 3x3/2 max pool with ``ceil_mode``, SE as 1x1 convs with bias), so the port's tensors
map one to one onto timm's names; only the identity classifier is dropped for the new head.

A pickle can run code when loaded, so the ``.pkl`` is read with an unpickler that admits only the
globals numpy arrays need (and no array larger than the file itself, which would only allocate
memory); torch files go through ``torch.load(weights_only=True)``
(:func:`ferlit.models.checkpoints.read_torch_file`). Tensors copied into the model must be finite
and floating point where the model's are.

A checkpoint of ``python -m ferlit.fit`` is recognised (its ``net.backbone.*`` tensors): its
backbone is loaded, and the preprocessing it was trained with comes along
(:attr:`LoadReport.preprocessing`), so that fine-tuning a trained model keeps its normalisation.
"""

from __future__ import annotations

import importlib
import io
import math
import os
import pickle
import re
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file as load_safetensors
from timm.models.senet import SENet
from torch import Tensor, nn

from ferlit.errors import WeightsError
from ferlit.io import file_kind
from ferlit.models.checkpoints import check_tensors, checkpoint_preprocessing, read_torch_file
from ferlit.models.preprocessing import Preprocessing, preprocessing_from_timm

PICKLE_SUFFIXES = (".pkl", ".pickle")
TORCH_SUFFIXES = (".pth", ".pt", ".ckpt")
SAFETENSORS_SUFFIXES = (".safetensors",)
ACCEPTED_FORMATS = ".pkl (VGGFace2 PyTorch port), .pth/.pt/.ckpt (torch state dict), .safetensors"

#: Wrappers and prefixes that training code commonly puts around a state dict.
_WRAPPER_KEYS = ("state_dict", "model")
_PREFIXES = ("module.", "model.", "net.", "backbone.", "_orig_mod.")

#: The port's names -> timm legacy SENet names (timm.models.senet: layer0 stem, SEModule fc1/fc2).
_PORT_RENAMES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^conv1\."), "layer0.conv1."),
    (re.compile(r"^bn1\."), "layer0.bn1."),
    (re.compile(r"^(layer\d+\.\d+\.)conv4\."), r"\1se_module.fc1."),
    (re.compile(r"^(layer\d+\.\d+\.)conv5\."), r"\1se_module.fc2."),
    (re.compile(r"^fc\."), "last_linear."),
)
_TIMM_TO_PORT: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^layer0\.conv1\."), "conv1."),
    (re.compile(r"^layer0\.bn1\."), "bn1."),
    (re.compile(r"^(layer\d+\.\d+\.)se_module\.fc1\."), r"\1conv4."),
    (re.compile(r"^(layer\d+\.\d+\.)se_module\.fc2\."), r"\1conv5."),
)
_PORT_SE_KEY = re.compile(r"^layer\d+\.\d+\.conv[45]\.")
#: Where ExpressionModule keeps the timm backbone (``self.net.backbone``) in its state dict.
_FERLIT_BACKBONE = "net.backbone."


def _resolve(module: str, name: str) -> Any:
    return getattr(importlib.import_module(module), name)


def _numpy_core(submodule: str) -> str:
    """numpy 2 moved ``numpy.core`` to ``numpy._core``; pickles name either, depending on writer."""
    try:
        importlib.import_module(f"numpy._core.{submodule}")
    except ImportError:
        return f"numpy.core.{submodule}"
    return f"numpy._core.{submodule}"


def _allowed_globals() -> dict[tuple[str, str], Any]:
    multiarray, numeric = _numpy_core("multiarray"), _numpy_core("numeric")
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("collections", "OrderedDict"): OrderedDict,
        # Python 3 writes bytes as _codecs.encode(str, "latin1") under pickle protocols 0-2.
        ("_codecs", "encode"): _resolve("_codecs", "encode"),
    }
    for old in ("numpy.core", "numpy._core"):
        allowed[(f"{old}.multiarray", "_reconstruct")] = _resolve(multiarray, "_reconstruct")
        allowed[(f"{old}.multiarray", "scalar")] = _resolve(multiarray, "scalar")
        # protocol 5 rebuilds arrays from out-of-band-capable buffers
        allowed[(f"{old}.numeric", "_frombuffer")] = _resolve(numeric, "_frombuffer")
    return allowed


class _ArrayUnpickler(pickle._Unpickler):
    """Unpickles dicts of numpy arrays and refuses every other global (so no reduce payload runs).

    The pure-Python unpickler (``pickle._Unpickler``) is used for its visible stack: a refused
    array is named by the dict key it is the value of. Its speed does not matter here: the file
    holds a few hundred arrays, whose bytes are read in one piece each.
    """

    def __init__(self, file: io.BufferedIOBase, path: Path) -> None:
        # latin1: the port's pickle was written by Python 2, whose str holds the raw array bytes.
        super().__init__(file, encoding="latin1")
        self._path = path
        self._size = path.stat().st_size
        self._allowed = _allowed_globals()
        for old in ("numpy.core", "numpy._core"):
            key = (f"{old}.multiarray", "_reconstruct")
            self._allowed[key] = self._bounded(self._allowed[key])

    def _bounded(self, reconstruct: Callable[..., Any]) -> Callable[..., Any]:
        """numpy's ``_reconstruct(cls, shape, dtype)`` allocates ``shape`` before the data comes
        (numpy itself always writes ``(0,)``): a shape with more elements than the file has
        bytes can only be an attempt to exhaust memory."""

        def reconstruct_within_the_file(subtype: Any, shape: Any, dtype: Any) -> Any:
            dims = tuple(shape) if isinstance(shape, tuple | list) else (shape,)
            if not all(isinstance(d, int) for d in dims) or math.prod(dims) > self._size:
                raise WeightsError(
                    f"{self._path}: entry {self._current_key()!r} asks for a numpy array of shape "
                    f"{shape}, more elements than the file has bytes ({self._size}); the file is "
                    "damaged or crafted to exhaust memory"
                )
            return reconstruct(subtype, shape, dtype)

        return reconstruct_within_the_file

    def _current_key(self) -> str | None:
        """The dict key whose value is being built: the last string on the unpickler's stack."""
        for item in reversed(getattr(self, "stack", [])):
            if isinstance(item, str):
                return item
        return None

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise WeightsError(
                f"{self._path}: refused to unpickle the global {module}.{name}; a VGGFace2 .pkl "
                "may hold only numpy arrays in a dict (anything else could run code)"
            ) from None


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_vggface2_weights` put into the backbone, for the run's log."""

    path: Path
    naming: str  # "vggface2-port" (names mapped to timm's) or "timm"
    tensors: int  # tensors copied into the backbone
    parameters: int  # learnable values among them (buffers such as BN statistics excluded)
    dropped: tuple[str, ...]  # file keys left out: the old classifier, replaced by the new head
    #: a ferlit checkpoint's own preprocessing (None for other files: VGGFace2's or the option's)
    preprocessing: Preprocessing | None = None

    def __str__(self) -> str:
        naming = {
            "vggface2-port": "VGGFace2 port names mapped to timm",
            "ferlit-checkpoint": "the backbone of a ferlit checkpoint",
        }.get(self.naming, "timm")
        dropped = f"; dropped {', '.join(self.dropped)}" if self.dropped else ""
        return (
            f"loaded {self.tensors} tensors ({self.parameters / 1e6:.2f}M parameters) "
            f"from {self.path.name} ({naming}){dropped}"
        )


def load_vggface2_weights(model: nn.Module, path: str | os.PathLike[str]) -> LoadReport:
    """Copy the weights in ``path`` into ``model`` (a timm backbone), all or nothing.

    Every tensor of the model except its classifier must be in the file with the same shape (BN
    ``num_batches_tracked``, which the Caffe port lacks, may be missing); the file's classifier is
    dropped. Otherwise a :class:`WeightsError` lists the missing, unexpected and mis-shaped keys
    and nothing is copied.
    """
    path = Path(path)
    stored = read_weights(path)
    preprocessing = None
    if _is_ferlit_checkpoint(stored):
        state = {
            k[len(_FERLIT_BACKBONE) :]: v
            for k, v in stored["state_dict"].items()
            if k.startswith(_FERLIT_BACKBONE)
        }
        preprocessing = checkpoint_preprocessing(stored, path) or preprocessing_from_timm(
            getattr(model, "pretrained_cfg", None) or {}
        )
    else:
        state = _unwrap(stored, path)
    state, origin = _to_timm_names(state, model, path)
    own = model.state_dict()
    classifier = _classifier_prefix(model)

    port = any(origin[k] != k for k in origin)
    dropped = [k for k in state if classifier and k.startswith(classifier)]
    wanted = {k for k in own if not (classifier and k.startswith(classifier))}
    missing = sorted(k for k in wanted - state.keys() if not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in state.keys() - own.keys() if k not in dropped)
    misshaped = sorted(
        k for k in wanted & state.keys() if tuple(state[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or misshaped:
        problems = []
        if missing:
            problems.append(f"missing {_listing([_named(k, origin, port) for k in missing])}")
        if unexpected:
            problems.append(f"unexpected {_listing([_named(k, origin, port) for k in unexpected])}")
        if misshaped:
            shapes = [
                f"{_named(k, origin, port)} file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                for k in misshaped
            ]
            problems.append(f"mis-shaped {_listing(shapes)}")
        raise WeightsError(
            f"{path}: does not fit model.backbone {_architecture(model)}: " + "; ".join(problems)
        )

    loaded = {k: state[k] for k in sorted(wanted & state.keys())}
    check_tensors(
        {_named(k, origin, port): v for k, v in loaded.items()},
        path,
        _by_file_name(own, origin, port),
    )
    model.load_state_dict(loaded, strict=False)
    parameter_names = {name for name, _ in model.named_parameters()}
    naming = "vggface2-port" if port else "timm"
    return LoadReport(
        path=path,
        naming="ferlit-checkpoint" if preprocessing is not None else naming,
        tensors=len(loaded),
        parameters=sum(t.numel() for k, t in loaded.items() if k in parameter_names),
        dropped=tuple(origin[k] for k in dropped),
        preprocessing=preprocessing,
    )


def _is_ferlit_checkpoint(stored: Any) -> bool:
    """A Lightning checkpoint of ExpressionModule: its state dict holds ``net.backbone.*``."""
    state = stored.get("state_dict") if isinstance(stored, Mapping) else None
    return isinstance(state, Mapping) and any(
        isinstance(k, str) and k.startswith(_FERLIT_BACKBONE) for k in state
    )


def _by_file_name(
    own: Mapping[str, Tensor], origin: dict[str, str], port: bool
) -> dict[str, Tensor]:
    """The model's tensors keyed as :func:`_named` names them in messages."""
    return {_named(k, origin, port): t for k, t in own.items()}


def read_weights(path: Path) -> Mapping[str, Any]:
    """The object stored in a weights file, read safely according to its extension."""
    suffix = path.suffix.lower()
    if suffix not in PICKLE_SUFFIXES + TORCH_SUFFIXES + SAFETENSORS_SUFFIXES:
        raise WeightsError(
            f"{path}: unknown weights format {suffix or '(no extension)'!r}; "
            f"expected {ACCEPTED_FORMATS}"
        )
    if path.is_dir():
        raise WeightsError(f"{path}: is a folder; expected a weights file, {ACCEPTED_FORMATS}")
    if not path.is_file():
        if os.path.lexists(path):  # a FIFO (never opened: it would block), a dangling link
            raise WeightsError(f"{path}: is {file_kind(path)}; expected a weights file")
        raise WeightsError(f"{path}: no such weights file; expected {ACCEPTED_FORMATS}")
    if path.stat().st_size == 0:
        raise WeightsError(f"{path}: empty file (0 bytes); expected {ACCEPTED_FORMATS}")
    if suffix in SAFETENSORS_SUFFIXES:
        return _guarded(path, "safetensors", lambda: load_safetensors(path, device="cpu"))
    if suffix in TORCH_SUFFIXES or zipfile.is_zipfile(path):
        # A .pkl written by torch.save is a zip archive: torch's own safe loader reads it.
        return read_torch_file(path)
    with path.open("rb") as f:
        return _guarded(path, "unpickle", _ArrayUnpickler(f, path).load)


def _guarded(path: Path, how: str, read: Callable[[], Any]) -> Any:
    try:
        return read()
    except WeightsError:
        raise
    except (
        pickle.UnpicklingError,
        EOFError,
        RuntimeError,
        SafetensorError,
        ValueError,
        TypeError,
        # what the pure-Python unpickler raises on a truncated or random byte stream (an opcode
        # that pops an empty stack, a memo key never stored, struct.error for short arguments)
        IndexError,
        KeyError,
        AttributeError,
        struct.error,
        OSError,
    ) as err:
        detail = str(err).strip().splitlines()[0] if str(err).strip() else ""
        kind = "struct.error" if isinstance(err, struct.error) else type(err).__name__
        detail = f"{kind}: {detail[:100]}" if detail else kind
        raise WeightsError(
            f"{path}: {how} failed (corrupt, truncated or not a weights file; {detail}); "
            f"expected {ACCEPTED_FORMATS}"
        ) from None


def _unwrap(obj: Any, path: Path) -> dict[str, Tensor]:
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise WeightsError(
            f"{path}: expected a non-empty dict of name -> tensor (or one under 'state_dict' or "
            f"'model'), got {type(obj).__name__}"
        )
    state: dict[str, Tensor] = {}
    for key, value in obj.items():
        if isinstance(value, np.ndarray):
            if value.dtype.kind not in "biufc":
                raise WeightsError(
                    f"{path}: entry {key!r} is a numpy array of dtype {value.dtype}, "
                    "expected numbers"
                )
            value = torch.from_numpy(np.ascontiguousarray(value))
        if not isinstance(key, str) or not isinstance(value, Tensor):
            raise WeightsError(
                f"{path}: entry {key!r} is a {type(value).__name__}, expected a tensor or numpy array"
            )
        state[key] = value
    stripped = True
    while stripped:
        stripped = False
        for prefix in _PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                stripped = True
    return state


def _to_timm_names(
    state: dict[str, Tensor], model: nn.Module, path: Path
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Rename port keys to timm's; also returns new name -> name in the file, for messages."""
    if not isinstance(model, SENet):
        if any(_PORT_SE_KEY.match(k) for k in state):
            raise WeightsError(
                f"{path}: holds the VGGFace2 SE-ResNet-50 port's weights (SE blocks named conv4/"
                f"conv5), which load only into model.backbone legacy_seresnet50, "
                f"not {_architecture(model)}"
            )
        return state, {k: k for k in state}
    renamed: dict[str, Tensor] = {}
    origin: dict[str, str] = {}
    for key, value in state.items():
        new = key
        for pattern, replacement in _PORT_RENAMES:
            new = pattern.sub(replacement, new)
        if new in renamed:
            raise WeightsError(f"{path}: holds both {origin[new]!r} and {key!r} for {new!r}")
        renamed[new], origin[new] = value, key
    return renamed, origin


def _classifier_prefix(model: nn.Module) -> str:
    get_classifier = getattr(model, "get_classifier", None)
    if get_classifier is None:
        return ""
    head = get_classifier()
    name = next((n for n, m in model.named_modules() if m is head), "")
    return f"{name}." if name else ""


def _architecture(model: nn.Module) -> str:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return str(cfg.get("architecture", type(model).__name__))


def _named(key: str, origin: dict[str, str], port: bool) -> str:
    """A key as the user's file spells it, with timm's name where that differs."""
    source = origin.get(key)
    if source is None:
        source = key
        for pattern, replacement in _TIMM_TO_PORT if port else ():
            source = pattern.sub(replacement, source)
    return key if source == key else f"{source} (as {key})"


def _listing(items: list[str], limit: int = 8) -> str:
    more = f", ... and {len(items) - limit} more" if len(items) > limit else ""
    return f"{len(items)}: " + ", ".join(items[:limit]) + more
