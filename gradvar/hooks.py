"""Hooks that leave the model copyable: deepcopy, `torch.save(model)` and EMA copies stay possible.

A hook that is a bound method or a closure over the monitor makes the model's hook dicts reach the monitor,
its capture and autograd nodes, which neither deepcopy nor pickle can copy (`cannot pickle 'AccumulateGrad'
object`). These hooks call their owner through a weak reference, and a copy of the model gets an inert hook
instead: a copy (an EMA, a checkpointed module) is not the model being monitored.
"""

from __future__ import annotations

import weakref


def inert(*args, **kwargs) -> None:
    """What a copy of a monitored model runs in place of the monitor's hooks."""
    return


class WeakHook:
    """Calls `getattr(owner, name)(*bound, *args)` while the owner lives."""

    __slots__ = ("_bound", "_name", "_ref")

    def __init__(self, owner, name: str, *bound):
        self._ref, self._name, self._bound = weakref.ref(owner), name, bound

    def __call__(self, *args, **kwargs):
        owner = self._ref()
        return None if owner is None else getattr(owner, self._name)(*self._bound, *args, **kwargs)

    def __deepcopy__(self, memo):
        return inert

    def __reduce__(self):
        return (_inert, ())


def _inert():
    return inert
