"""LLaMA-Factory's trainer_log.jsonl: `current_steps`, `loss`, `lr`, ... one object per logged step.

Launched on several GPUs, older LLaMA-Factory versions write every step once per rank (the values differ in
the last digit: each rank's own running loss). Those rows are one step: merged by their mean, with a note. A
step number that goes back is a resumed run: the rows written after the resume win for the steps they repeat,
and the resume step is kept in meta so the diagnosis can judge the first steps after it.
"""

from __future__ import annotations

import math

# Progress fields, not metrics: a 'percentage' that climbs would otherwise rank as an early-warning signal.
RANK_WINDOW = 8
"""How many rows back a repeated step counts as another rank's copy of it."""
PROGRESS_KEYS = ("total_steps", "percentage", "elapsed_time", "remaining_time", "throughput", "total_tokens")


def is_llamafactory(rows: list) -> bool:
    """Whether JSONL rows look like LLaMA-Factory's (a current_steps and a total_steps field)."""
    return bool(rows) and all("current_steps" in r for r in rows[:20]) and any("total_steps" in r for r in rows[:20])


def merge_ranks(rows: list, labels: list, key: str = "current_steps") -> tuple[list, list, list, list]:
    """(rows, labels, notes, resume_steps): one row per `key` step, per-rank copies averaged, resumes resolved."""
    rows = [{k: v for k, v in r.items() if k not in PROGRESS_KEYS} for r in rows]
    # Rows without a loss (evaluations at the same step) stay apart: finalize() files them as eval rows.
    aside = [(r, lab) for r, lab in zip(rows, labels) if r.get("loss") is None]
    train = [(r, lab) for r, lab in zip(rows, labels) if r.get("loss") is not None]
    segments, resumes = _split_at_resumes([r for r, _ in train], [lab for _, lab in train], key)
    by_step: dict = {}
    copies: dict = {}
    for seg in segments:  # later segments (after a resume) replace what they repeat
        seen: dict = {}
        for row, label in seg:
            seen.setdefault(row[key], []).append((row, label))
        for step, group in seen.items():
            by_step[step] = (_mean_row([g[0] for g in group], key), group[0][1])
            copies[step] = len(group)
    steps = sorted(by_step)
    notes = []
    multi = [n for n in copies.values() if n > 1]
    if multi:
        notes.append(f"{len(multi)} steps were written {max(multi)} times (once per rank): merged by their mean")
    if resumes:
        notes.append(
            "resumed at step(s) " + ", ".join(str(s) for s in resumes) + ": the rows written after each "
            "resume replace the ones they repeat"
        )
    rows_out = [by_step[s][0] for s in steps] + [r for r, _ in aside]
    return rows_out, [by_step[s][1] for s in steps] + [lab for _, lab in aside], notes, resumes


def _split_at_resumes(rows: list, labels: list, key: str) -> tuple[list, list]:
    """Segments of (row, label) split where the run resumed; the first step of each later segment.

    Ranks drift apart by a step or two (rank 1 writes 1010, rank 0 writes 1020, rank 1 writes 1020): a step
    that goes back to one written within the last RANK_WINDOW rows is a rank copy, not a resume.
    """
    segments, resumes, recent = [[]], [], []
    last = -math.inf
    for row, label in zip(rows, labels):
        step = row.get(key)
        if not isinstance(step, (int, float)):
            continue
        if step < last and step not in recent:
            segments.append([])
            resumes.append(int(step))
        segments[-1].append((row, label))
        last = max(last, step) if step in recent else step
        recent = (recent + [step])[-RANK_WINDOW:]
    return [s for s in segments if s], resumes


def _mean_row(group: list, key: str) -> dict:
    if len(group) == 1:
        return group[0]
    out = dict(group[0])
    for name in out:
        vals = [g.get(name) for g in group]
        if name != key and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            out[name] = sum(vals) / len(vals)
    return out
