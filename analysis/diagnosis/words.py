"""Number formatting shared by the advice modules."""

from __future__ import annotations


def _g(x) -> str:
    return f"{x:.3g}"


def _step_list(steps, n: int = 6) -> str:
    s = ", ".join(str(v) for v in steps[:n])
    return s + (f" and {len(steps) - n} more" if len(steps) > n else "")
