"""Flush-time combination of buffered per-step statistics: across ranks, then to the host, once.

All buffered steps' SUM-type values are concatenated into one flat tensor and all-reduced once, likewise
MAX-type values; RANK-type values occupy one slot per rank in the SUM tensor. Then everything travels to
the host in a single copy. The layout is deterministic across ranks because schedules depend on the step
only, and SAME-type values (identical on every rank, or computed on rank 0 alone) never enter a collective.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from .quantities.base import MAX, MIN, RANK, SAME, SUM


def combine(rows: list[dict], world_size: int, rank: int, extra=()) -> tuple[dict[str, np.ndarray], list[float]]:
    """rows: per step {name: Stat}. Returns {name: (n_steps, width) float64 array}, NaN where absent, and the
    `extra` device scalars of this rank (side rows, such as the probes') as floats, from the same copy."""
    layout = {SUM: [], MAX: [], MIN: [], SAME: []}  # (row index, name, width)
    parts = {SUM: [], MAX: [], MIN: [], SAME: []}
    for i, row in enumerate(rows):
        for name in sorted(row):
            stat = row[name]
            v = stat.value.detach().reshape(-1).to(torch.float64)
            if stat.op == RANK:
                slot = torch.zeros(world_size, v.numel(), dtype=torch.float64, device=v.device)
                slot[rank] = v
                v, op = slot.reshape(-1), SUM
            elif stat.op == MIN:  # min = -max(-x): rides in the MAX all-reduce, negated back in _unpack
                v, op = -v, MIN
            else:
                op = stat.op
            layout[op].append((i, name, v.numel()))
            parts[op].append(v)
    if extra:  # rank-local like SAME values, after them: _unpack never reads past the rows' entries
        parts[SAME].append(torch.stack([v.detach().reshape(()).to(torch.float64) for v in extra]))
    parts[MAX] += parts.pop(MIN)  # MIN entries follow MAX's in one tensor (see _unpack)
    flat = {op: torch.cat(p) if p else None for op, p in parts.items()}
    if world_size > 1:
        for op, red in ((SUM, dist.ReduceOp.SUM), (MAX, dist.ReduceOp.MAX)):
            if flat[op] is not None:
                dist.all_reduce(flat[op], op=red)
    host = _to_host(flat)
    return _unpack(layout, host, len(rows)), (host[SAME][-len(extra) :].tolist() if extra else [])


def _to_host(flat: dict) -> dict:
    present = [(op, t) for op, t in flat.items() if t is not None]
    if not present:
        return {}
    sizes = [t.numel() for _, t in present]
    # One device-to-host copy for the whole flush: the only sync the monitor makes.
    joined = torch.cat([t.to(present[0][1].device) for _, t in present]).cpu().numpy()
    out, start = {}, 0
    for (op, _), n in zip(present, sizes):
        out[op] = joined[start : start + n]
        start += n
    return out


def _unpack(layout: dict, host: dict, n_rows: int) -> dict[str, np.ndarray]:
    widths: dict[str, int] = {}
    for entries in layout.values():
        for _, name, w in entries:
            widths[name] = max(widths.get(name, 0), w)
    raw = {name: np.full((n_rows, w), np.nan) for name, w in widths.items()}
    ends = {}
    for op, entries in layout.items():
        src = MAX if op == MIN else op
        pos, vec = ends.get(src, 0), host.get(src)
        for i, name, w in entries:
            raw[name][i, :w] = -vec[pos : pos + w] if op == MIN else vec[pos : pos + w]
            pos += w
        ends[src] = pos
    return raw
