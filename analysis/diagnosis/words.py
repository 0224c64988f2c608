"""Number formatting shared by the advice modules."""

from __future__ import annotations


def _g(x) -> str:
    return f"{x:.3g}"


def _step_list(steps, n: int = 6) -> str:
    s = ", ".join(str(v) for v in steps[:n])
    return s + (f" and {len(steps) - n} more" if len(steps) > n else "")


def clip_fix(f: dict) -> str:
    """'gradient clipping at 1.0', or, where the log shows clipping on, a tighter threshold with the evidence."""
    clip = f.get("clipping")
    return f"a lower clipping threshold (clipping is on: {clip})" if clip else "gradient clipping at 1.0"
