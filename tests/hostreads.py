"""A watcher for host reads of device values in our own code (each one a host-device sync on a GPU).

On this CPU-only machine no sync can be observed directly, so the watcher records the operations that would
make one: reading a tensor's value on the host (`.item()`, `float()`, `bool()`, `.tolist()`, `.numpy()`,
`.cpu()`), building a tensor from host data on a device (`torch.tensor(..., device=)`: a blocking
host-to-device copy on CUDA), and ops whose output
size depends on the data (`nonzero`, `masked_select`). Only calls made directly from `gradvar/` or `trainer/` count:
what torch or transformers do inside is theirs. gradvar's CPU-only shortcuts (`_torch_compat.HOST_READS_FREE`:
host reads where they wait for nothing) are off inside the watcher: it checks the path an accelerator runs.
"""

from __future__ import annotations

import traceback
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from gradvar import _torch_compat as tc

ROOT = Path(__file__).resolve().parent.parent
OURS = tuple(str(ROOT / pkg) + "/" for pkg in ("gradvar", "trainer"))
OPS = {"aten._local_scalar_dense.default", "aten.nonzero.default", "aten.masked_select.default"}
FACTORIES = ("tensor", "as_tensor")
METHODS = ("tolist", "numpy", "cpu")


TORCH = Path(torch.__file__).parent
PLUMBING = (
    __file__,
    *(str(TORCH / part) for part in ("utils/_python_dispatch.py", "_ops.py", "_dynamo/", "_compile.py")),
)
"""Frames between a call and the watcher (path prefixes)."""


def _our_frame() -> str | None:
    """file:line of the code that made the call, when it is ours (torch's own Python, e.g. an optimizer's
    step, is the caller of what happens inside it)."""
    for frame in reversed(traceback.extract_stack()):
        if frame.filename.startswith(PLUMBING):
            continue
        if frame.filename.startswith(OURS):
            return f"{Path(frame.filename).relative_to(ROOT)}:{frame.lineno}"
        return None
    return None


class HostReads(TorchDispatchMode):
    """with HostReads() as w: ...; w.hits lists 'op at file:line' for every host read from our code."""

    def __init__(self):
        super().__init__()
        self.hits: list[str] = []
        self._saved: dict = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if str(func) in OPS:
            self._note(str(func))
        return func(*args, **(kwargs or {}))

    def _note(self, what: str) -> None:
        where = _our_frame()
        if where is not None:
            self.hits.append(f"{what} at {where}")

    def __enter__(self):
        self._path = tc.accelerator_path()
        self._path.__enter__()
        for name in FACTORIES:  # a tensor built from host data on a given device: a blocking copy on CUDA
            real = getattr(torch, name)
            self._saved[("torch", name)] = real

            def factory(*a, _real=real, _name=name, **k):
                if k.get("device") is not None:
                    self._note(f"torch.{_name}(..., device=)")
                return _real(*a, **k)

            setattr(torch, name, factory)
        for name in METHODS:
            real = getattr(torch.Tensor, name)
            self._saved[("Tensor", name)] = real

            def wrapped(t, *a, _real=real, _name=name, **k):
                self._note(f"Tensor.{_name}")
                return _real(t, *a, **k)

            setattr(torch.Tensor, name, wrapped)
        return super().__enter__()

    def __exit__(self, *exc):
        self._path.__exit__(*exc)
        for (owner, name), real in self._saved.items():
            setattr(torch if owner == "torch" else torch.Tensor, name, real)
        return super().__exit__(*exc)
