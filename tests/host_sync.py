"""The host synchronisations a CUDA run would make, found on a CPU.

On a GPU the host queues kernels and runs ahead of the device; any call that needs a value back
on the host (``.item()``, ``bool(t)``, ``.tolist()``, ``.cpu()``, ``nonzero`` and boolean-mask
indexing, whose output size the device must first compute) makes it wait until the device has
finished everything queued, and the GPU then idles while the host catches up (Lightning's
per-step Python work). Making a tensor from host data right on a device
(``torch.tensor(data, device=...)``, as ``LightningModule.log`` does with a Python number) is a
blocking copy, which waits the same way; made on the host and copied with
``.to(device, non_blocking=True)`` it is not. A training step of a fed GPU makes none of these.

There is no GPU here, so :class:`HostSyncs` records those calls as made, on any device: a
``TorchFunctionMode`` sees every torch call of the code under test. Calls made by the data
loader (``torch.utils.data``: its collation and the dataset run on the host by design) and in
``on_before_batch_transfer`` (the batch is still on the host there, by Lightning's definition) are
not counted.
"""

from __future__ import annotations

import traceback

import torch
from torch.overrides import TorchFunctionMode

Tensor = torch.Tensor

#: Calls that read a device tensor's value on the host (each waits for the device).
READS = {
    Tensor.item: "item()",
    Tensor.tolist: "tolist()",
    Tensor.numpy: "numpy()",
    Tensor.cpu: "cpu()",
    Tensor.__bool__: "bool(tensor)",
    Tensor.__int__: "int(tensor)",
    Tensor.__float__: "float(tensor)",
    Tensor.__index__: "tensor as an index",
    Tensor.nonzero: "nonzero()",
    torch.nonzero: "torch.nonzero",
    Tensor.masked_select: "masked_select()",
    torch.masked_select: "torch.masked_select",
    torch.unique: "torch.unique",
    Tensor.unique: "unique()",
}

#: Tensors made from host data: blocking copies when made right on a device (``device=``).
MADE_ON_DEVICE = {
    torch.tensor: "torch.tensor(host data, device=)",
    torch.as_tensor: "torch.as_tensor(host data, device=)",
}


def _bool_mask(value) -> bool:
    if isinstance(value, Tensor):
        return value.dtype == torch.bool
    if isinstance(value, tuple | list):
        return any(_bool_mask(v) for v in value)
    return False


class HostSyncs(TorchFunctionMode):
    """Record the host synchronisations made while active (``with HostSyncs() as syncs``).

    ``syncs.calls`` lists ``(what, where)``: the call and the innermost frame of the code that
    made it outside torch (a file and line of ferlit, Lightning or torchmetrics).

    ``allowed``: ``(file name ending, function)`` pairs whose reads are not counted, for a read
    designed not to wait for the device (a host copy made non-blocking, read after its event).
    """

    def __init__(self, allowed: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__()
        self.calls: list[tuple[str, str]] = []
        self.allowed = allowed

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        what = READS.get(func)
        if func in MADE_ON_DEVICE and kwargs.get("device") is not None:
            what = MADE_ON_DEVICE[func]
        indexing = func in (Tensor.__getitem__, Tensor.__setitem__) and len(args) > 1
        if what is None and indexing and _bool_mask(args[1]):
            what = "indexing by a boolean mask"
        if what is not None:
            self._record(what)
        return func(*args, **kwargs)

    def _record(self, what: str) -> None:
        stack = traceback.extract_stack()[:-2]
        if any(
            "torch/utils/data" in frame.filename or frame.name == "on_before_batch_transfer"
            for frame in stack
        ):
            return  # the loader's work, and the batch before its transfer: on the host
        if any(
            frame.filename.endswith(file) and frame.name == function
            for frame in stack
            for file, function in self.allowed
        ):
            return
        outside = [
            f
            for f in stack
            if "/torch/" not in f.filename and not f.filename.endswith("host_sync.py")
        ]
        frame = outside[-1] if outside else stack[-1]
        self.calls.append((what, f"{frame.filename}:{frame.lineno} ({frame.name})"))

    def report(self) -> str:
        return "\n".join(f"{what} at {where}" for what, where in self.calls)
