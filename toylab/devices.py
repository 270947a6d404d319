"""Which torch device a model, a training run or an evaluation runs on.

Every entry point that builds or trains a model takes ``device=`` (None, a string such as
``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, or a ``torch.device``) and passes it through
``resolve_device``; None means the CPU. Methods take no device of their own: they run where
the model they are given lives (``model.device``).

Conventions that keep results the same on every device:
  * weights are initialised and data are drawn on the CPU, from CPU generators, and then
    moved, so a seed gives the same initial weights and the same batches everywhere;
  * checkpoints hold CPU tensors;
  * figures reported to the user (``.item()``, numpy, JSON) are read back with ``.cpu()``.
"""

from __future__ import annotations

import torch

DeviceLike = str | torch.device | None

_EXAMPLES = "'cpu', 'cuda', 'cuda:1' or 'mps'"


def resolve_device(device: DeviceLike = None) -> torch.device:
    """``device`` as a ``torch.device`` (the CPU for None), checked to exist on this machine.

    Raises ValueError naming the problem for a malformed string or a device this machine
    (or this build of torch) does not have, rather than failing later inside a kernel.
    """
    if device is None:
        return torch.device("cpu")
    if isinstance(device, torch.device):
        dev = device
    elif isinstance(device, str):
        try:
            dev = torch.device(device.strip())
        except RuntimeError:
            raise ValueError(f"unknown device {device!r}: expected a torch device such as {_EXAMPLES}") from None
    else:
        raise TypeError(f"device must be a string or torch.device, got {type(device).__name__}")

    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {str(dev)!r} was requested but CUDA is not available "
                f"(torch {torch.__version__}, built with CUDA {torch.version.cuda}); use device='cpu'"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(dev)!r} does not exist: this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ValueError(f"device {str(dev)!r} was requested but MPS is not available; use device='cpu'")
    elif dev.type == "meta":
        raise ValueError("device 'meta' holds no data; toylab cannot train or evaluate on it")
    elif dev.type != "cpu":
        backend = getattr(torch, dev.type, None)
        if backend is None or not getattr(backend, "is_available", lambda: False)():
            raise ValueError(f"device {str(dev)!r} is not available on this machine; use device='cpu'")
    return dev


def device_name(device: DeviceLike) -> str:
    """A short record of a device for a card: "cpu", "cuda:0", ...; with the GPU's model where known."""
    dev = resolve_device(device)
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(dev)
