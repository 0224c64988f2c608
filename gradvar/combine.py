"""Flush-time combination of buffered per-step statistics: across ranks, then to the host, once.

All buffered steps' SUM-type values are concatenated into one flat tensor, likewise MAX-type values;
RANK-type values occupy one slot per rank in the SUM tensor. Both travel in one collective per flush: an
all-gather of the two side by side, summed and maxed over ranks locally (a payload of a few thousand numbers
per rank; past `GATHER_LIMIT` gathered elements, two all-reduces instead). Then everything travels to the
host in a single copy. The layout is deterministic across ranks because schedules depend on the step only,
and SAME-type values (identical on every rank, or computed on rank 0 alone) never enter a collective.
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
        _across_ranks(flat, world_size)
    host = _to_host(flat)
    return _unpack(layout, host, len(rows)), (host[SAME][-len(extra) :].tolist() if extra else [])


GATHER_LIMIT = 1 << 22
"""Gathered elements (float64, all ranks) up to which one all-gather replaces the SUM and MAX all-reduces: the
all-gather moves world_size times the payload, which stays small for the flush of a few hundred ranks."""


def _across_ranks(flat: dict, world_size: int) -> None:
    """SUM and MAX over ranks in place, in one collective where the gathered payload stays small."""
    present = [op for op in (SUM, MAX) if flat[op] is not None]
    joined = torch.cat([flat[op] for op in present]) if present else None
    if joined is None:
        return
    if joined.numel() * world_size > GATHER_LIMIT:
        for op in present:
            dist.all_reduce(flat[op], op=dist.ReduceOp.SUM if op == SUM else dist.ReduceOp.MAX)
        return
    rows = joined.new_empty(world_size * joined.numel())  # flat: gloo refuses the (world, n) form
    _all_gather(rows, joined)
    rows = rows.view(world_size, -1)
    start = 0
    for op in present:
        n = flat[op].numel()
        part = rows[:, start : start + n]
        flat[op] = part.sum(0) if op == SUM else part.amax(0)
        start += n


def _all_gather(out: torch.Tensor, t: torch.Tensor) -> None:
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor  # torch 2.13 renamed it
    gather(out, t)


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
