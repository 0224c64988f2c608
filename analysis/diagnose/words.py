"""Number formatting shared by the advice modules."""

from __future__ import annotations


def _g(x) -> str:
    return f"{x:.3g}"
