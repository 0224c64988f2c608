"""TensorBoard event files or folders into a LogData (the decoding itself is in analysis.logs.tfevents)."""

from __future__ import annotations

from pathlib import Path

from ..errors import LogError
from .table import EVAL_PREFIX, LogData, _short_list, canonical_names, finalize, snake
from .tfevents import read_scalars


def _load_tensorboard(p: Path, files) -> LogData:
    long, notes = read_scalars(files, root=p if p.is_dir() else p.parent)
    if long.empty:
        raise LogError(f"{p}: TensorBoard file(s) hold no scalar values")
    long = _one_run(long, notes)
    is_eval = long["tag"].map(lambda t: any(EVAL_PREFIX.match(snake(part)) for part in t.split("/")))
    # read_scalars left one value per (step, tag), so pivot() keeps logged NaNs (pivot_table would drop them).
    train = long[~is_eval].pivot(index="step", columns="tag", values="value").reset_index()
    train.columns = [str(c) for c in train.columns]
    names = canonical_names(train.columns)
    if "loss" not in names:
        tags = sorted(long["tag"].unique())
        raise LogError(f"{p}: no loss column (TensorBoard tags found: {_short_list(tags)})")
    loss_tag = train.columns[names.index("loss")]
    has_loss = set(long.loc[long["tag"] == loss_tag, "step"])
    train = train[train["step"].isin(has_loss)].reset_index(drop=True)
    log = finalize(train, [f"step {s}" for s in train["step"]], str(p), "tensorboard")
    log.notes.extend(notes)
    if is_eval.any():
        ev = long[is_eval].pivot(index="step", columns="tag", values="value").reset_index()
        ev.columns = ["step"] + [snake(c) for c in ev.columns[1:]]
        log.eval_df = ev
    return log


def _has_loss(tags) -> bool:
    return "loss" in canonical_names(list(tags))


# Megatron writes each scalar three times: by iteration, 'vs samples' and 'vs tokens' (their step is a count of
# samples or tokens, which would interleave with the iterations).
_OTHER_AXES = (" vs samples", " vs tokens", " vs steps")


def _one_run(long, notes: list):
    """The scalars of one run, its folder prefix stripped from the tags.

    A HF `runs/` folder holds one subfolder per run (`Oct26_10-11-12_host/train/loss`); add_scalars() writes one
    subfolder per series whose tags carry no loss. A subfolder whose own tags include a loss is a run; with
    several, the newest (latest wall time) is read and the others named in a note.
    """
    long = long[~long["tag"].str.endswith(_OTHER_AXES)]
    first = long["tag"].str.split("/", n=1)
    prefix = first.str[0].where(first.str.len() > 1, "")
    rest = first.str[-1]
    if _has_loss(long["tag"].unique()):
        return long
    runs = [r for r in prefix.unique() if r and _has_loss(rest[prefix == r].unique())]
    if not runs:
        return long
    newest = max(runs, key=lambda r: long.loc[prefix == r, "wall_time"].max())
    if len(runs) > 1:
        notes.append(f"{len(runs)} runs in this folder ({', '.join(sorted(runs))}): read the newest, {newest}")
    out = long[prefix == newest].copy()
    out["tag"] = rest[prefix == newest]
    return out
