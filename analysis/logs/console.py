"""Any trainer's console lines: the generic reader.

Every training framework prints its own line, so this reader does not know formats; it knows what a training
line holds. A line is an *entry* when it carries a step-like counter and a loss-like value:

    | epoch   1 |   200/ 2983 batches | lr 20.00 | ms/batch 45.1 | loss  7.63 | ppl  2064.50    (PyTorch examples)
    | epoch 001:    450 / 1891 loss=11.521, nll_loss=10.881, ..., num_updates=445, ...         (fairseq)
    [2023-05-22 21:52:36] [INFO] [Rank 0] ... iteration  2/ 55000 | ... | lm_loss: 2.17E+00 |   (DeepSpeed)
    [2018-11-26 14:47:26,759 INFO] Step 5350/50000; acc:  51.25; ppl:  8.43; xent: 2.13; ...     (OpenNMT)
    Epoch 1/10 / 9595/9595 [=====] - 1s - loss: 0.6242 - acc: 0.6295 - val_loss: 0.5265          (Keras)
    Epoch: [21][1390/1930]  Time 0.690 (0.986)  Data 0.004 (0.009)  Loss 2.5681 (10.9521)        (speech)
    epoch: 3442 loss: 0.2105546216666698                                                         (key: value)

Noise is taken apart first: a physical line is split at carriage returns and backspaces (tqdm and Keras redraw
with them), and time stamps, '[...]' tags ('[Rank 0]', '[INFO]'), 'INFO |' fields, a 'N:' rank prefix and the
'> ' of a GitHub quote are stripped. Then `name value`, `name: value` and `name=value` pairs are read (a value
in parentheses after another, a running average, is not a value); the first `k/N` fraction is a counter.

The step of an entry, in this order: an explicit counter (num_updates, global step, step, iteration, iter);
else a `k/N` fraction within an epoch, `(E - base) * N + k`, with the epoch from the line or the last
'Epoch E' line before it (base 0 when the log has an epoch 0, else 1; a fractional epoch is progress, not a
counter); else the epoch; else a batch number. A log whose entries are all whole-epoch summaries (k = N every
time, Keras's old per-epoch lines) is read per epoch. The loss is the best loss-like name the lines share:
'loss', then train/lm/total loss, then any other '...loss' (not val/eval/test, not 'loss scale'), then
xent/cross-entropy/nll. Lines that only carry val/valid/eval/test losses are evaluation rows.

Confidence rule (a log that fails it is refused with a line saying why, never guessed):
  - at least MIN_ENTRIES entries share one loss name;
  - the counter goes up: copies of a step (several ranks writing the same line) are merged, one restart is a
    resume, a counter that restarts more often is not a step (a per-epoch batch number without its epoch);
  - every finite loss value is >= 0 (a negative value is a log-likelihood or a reward, not a loss).
"""

from __future__ import annotations

import bisect
import re
from collections import Counter
from pathlib import Path

import pandas as pd

from ..errors import LogError
from .json_logs import _records_to_log
from .llamafactory import merge_ranks
from .table import LogData, _numeric_frame

MIN_ENTRIES = 2
"""Entries a log needs before the reader trusts its reading: two points are the least a step axis has."""

_NUM = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?nan|[+-]?inf"
# A name is up to 8 words; the possessive '*+' keeps a word from giving characters back: without both, a long
# line of words and no number costs quadratic (or worse) backtracking.
_WORD = r"[A-Za-z(][\w.()/%'-]*+"
_PAIR = re.compile(
    rf"(?<![\w.])({_WORD}(?: {_WORD}){{0,7}})\s*[:=]?\s*({_NUM})(?:ms|s|%)?(?![\w.(]|:\d)", re.IGNORECASE
)
_FRACTION = re.compile(r"(?<![\w.])(\d+)\s*/\s*(\d+)(?![\w.])")
_BRACKET_EPOCH = re.compile(r"epoch\s*(?:\(\w+\))?\s*:?\s*\[(\d+)\]", re.IGNORECASE)
_AVERAGE = re.compile(rf"\(\s*(?:{_NUM})\s*\)")  # 'Loss 2.5681 (10.9521)': the running average
_PREFIXES = (
    re.compile(r"^>\s*"),
    re.compile(r"^\[[^\]]*\]\s*"),
    re.compile(r"^\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:[.,]\d+)?\s*(?:[|-]\s*)?"),
    re.compile(r"^\d\d/\d\d(?:/\d{2,4})?\s+\d\d:\d\d:\d\d\s*(?:-\s*)?"),
    re.compile(r"^(?:INFO|WARNING|WARN|DEBUG)\b\s*(?:[|:-]\s*)?"),
    re.compile(r"^[\w.]+\s*-\s*(?:INFO|WARNING|DEBUG)\s*-\s*"),  # mmengine's 'mmengine - INFO - '
    re.compile(r"^(?:rank\s*)?\d+\s*:\s+", re.IGNORECASE),
    re.compile(r"^train_inner\s*\|\s*"),
    re.compile(r"^\|\s*"),
)
_STEP_NAMES = ("num_updates", "global_step", "step", "iteration", "iter", "current_steps")
_LOSS_FIRST = ("loss", "train_loss", "trainloss", "training_loss", "lm_loss", "total_loss", "train_lm_loss")
_LOSS_LAST = ("xent", "cross_entropy", "ce", "nll")
_EVAL = re.compile(r"^(val|valid|validation|eval|test|dev)(_|$)")
_NOT_LOSS = re.compile(r"(^|_)(scale|ppl|acc|accuracy|time|rate|lr|norm)(_|$)")


def read_console(p: Path, text: str) -> LogData | None:
    """LogData from console lines; None when no line holds a step and a loss (another reader's file);
    LogError when lines do, but the log fails the confidence rule."""
    lines = _parsed_lines(text)
    entries, evals = _entries(lines)
    if not entries:
        return None
    key = Counter(e["loss_key"] for e in entries).most_common(1)[0][0]
    entries = [e for e in entries if e["loss_key"] == key]
    if len(entries) < MIN_ENTRIES:
        raise LogError(
            f"{p}: only {len(entries)} console line holds a step-like counter and a loss-like value ('{key}'); "
            f"the generic reader needs at least {MIN_ENTRIES} to read a log"
        )
    steps, how = _steps(p, entries)
    # A name on fewer than half the entries is a cut line's fragment or a one-off print, not a column.
    shared = Counter(k for e in entries for k in e["columns"])
    keep = {k for k, n in shared.items() if 2 * n >= len(entries)}
    rows, labels = [], []
    for e, step in zip(entries, steps):
        values = {k: _float(v) for k, v in e["columns"].items() if k in keep}
        rows.append({"step": step, "loss": _float(e["pairs"][key]), **values})  # floats: rank copies are averaged
        labels.append(f"line {e['no']}")
    negative = [r for r in rows if _is_negative(r["loss"])]
    if negative:
        raise LogError(
            f"{p}: '{key}' is {negative[0]['loss']} at step {negative[0]['step']}: a negative value is not a loss "
            "(a log-likelihood or a reward?), so the generic reader does not read it as one"
        )
    rows, labels, notes, resumes = merge_ranks(rows, labels, key="step")
    if len(resumes) > 1:
        raise LogError(
            f"{p}: the step-like counter goes back {len(resumes)} times (at steps "
            f"{', '.join(str(s) for s in resumes[:5])}): a counter that restarts is not a training step"
        )
    log = _records_to_log(p, rows, labels, "console")
    log.notes[:0] = notes + [f"read by the generic console reader: loss from '{key}', steps from {how}"]
    log.meta["steps_from"] = how
    log.meta["loss_from"] = key
    if resumes:
        log.meta["resume_steps"] = resumes
    ev = _eval_rows(evals, dict(zip([e["no"] for e in entries], steps)))
    if ev is not None and not ev.empty:
        log.eval_df = ev
    return log


def _parsed_lines(text: str) -> list:
    """[(line number, {name: value string}, (k, N) fraction or None)] for every line with a digit in it."""
    out = []
    for no, physical in enumerate(text.splitlines(), start=1):
        for seg in re.split(r"[\r\x08]+", physical):
            line = _strip_prefixes(seg)
            if not line or not re.search(r"\d", line):
                continue
            bracket = _BRACKET_EPOCH.search(line)
            body = _AVERAGE.sub(" ", line)
            pairs = {}
            for name, value in _PAIR.findall(body):
                key = _key(name)
                if key and key not in pairs:
                    pairs[key] = value
            if bracket and "epoch" not in pairs:
                pairs["epoch"] = bracket.group(1)
            frac = _FRACTION.search(body)
            out.append((no, pairs, (int(frac.group(1)), int(frac.group(2))) if frac else None))
    return out


def _strip_prefixes(line: str) -> str:
    line = line.strip()
    changed = True
    while changed and line:
        changed = False
        for pat in _PREFIXES:
            new = pat.sub("", line, count=1)
            if new != line:
                line, changed = new.strip(), True
    return line


def _key(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


def _loss_key(pairs: dict):
    """The best loss-like name in a line's pairs, or None."""
    train = [k for k in pairs if not _EVAL.match(k)]
    for k in _LOSS_FIRST:
        if k in train:
            return k
    ends = [k for k in train if k.endswith("loss") and not _NOT_LOSS.search(k)]
    if ends:
        return ends[0]
    for k in _LOSS_LAST:
        if k in train:
            return k
    return None


def _entries(lines: list) -> tuple[list, list]:
    """(entries, eval rows) with each line's counters; the epoch of an 'Epoch E/M' line carries forward."""
    entries, evals = [], []
    carried = None
    zero_epoch = any(_int(pairs.get("epoch")) == 0 for _, pairs, _ in lines)
    for no, pairs, frac in lines:
        epoch = _int(pairs.get("epoch"))
        loss_key = _loss_key(pairs)
        counters = {"explicit": next((_int(pairs[k]) for k in _STEP_NAMES if _int(pairs.get(k)) is not None), None)}
        counters.update(
            epoch=epoch if epoch is not None else carried,
            own_epoch=epoch,
            fraction=frac,
            batch=_int(pairs.get("batch")),
        )
        if loss_key is None:
            ev = {k: v for k, v in pairs.items() if _EVAL.match(k) and k.endswith("loss")}
            if ev:
                evals.append({"no": no, "counters": counters, "values": ev})
            if epoch is not None:
                carried = epoch
            continue
        if epoch is not None:
            carried = epoch
        columns = {k: v for k, v in pairs.items() if k != loss_key and k not in _STEP_NAMES + ("steps", "it")}
        val = {k: v for k, v in columns.items() if _EVAL.match(k)}
        columns = {k: v for k, v in columns.items() if not _EVAL.match(k)}
        if val:
            evals.append({"no": no, "counters": counters, "values": val, "same_line": True})
        entries.append({"no": no, "pairs": pairs, "loss_key": loss_key, "counters": counters, "columns": columns})
    for e in entries + evals:
        e["counters"]["base"] = 0 if zero_epoch else 1
    return entries, evals


def _steps(p: Path, entries: list) -> tuple[list, str]:
    """One step per entry and the words saying where it came from."""
    cs = [e["counters"] for e in entries]
    if all(c["explicit"] is not None for c in cs):
        name = next(k for k in _STEP_NAMES if _int(entries[0]["pairs"].get(k)) is not None)
        return [c["explicit"] for c in cs], f"the '{name}' counter"
    fracs = [c["fraction"] for c in cs]
    if all(f is not None for f in fracs):
        epochs = [c["epoch"] for c in cs]
        if all(e is not None for e in epochs) and all(k == n for k, n in fracs):
            return epochs, "the epoch (every entry is a whole-epoch summary)"
        if all(e is not None for e in epochs):
            base = cs[0]["base"]
            return [(e - base) * n + k for e, (k, n) in zip(epochs, fracs)], f"(epoch - {base}) x batches + batch"
        return [k for k, _ in fracs], "the k of the 'k/N' progress counter"
    if all(c["own_epoch"] is not None for c in cs):  # an epoch carried from an 'Epoch E/M' line is no step
        return [c["own_epoch"] for c in cs], "the epoch"
    if all(c["batch"] is not None for c in cs):
        return [c["batch"] for c in cs], "the batch number"
    missing = next((e for e in entries if not _has_counter(e["counters"])), None)
    if missing is not None:
        raise LogError(
            f"{p}: line {missing['no']} has a loss but no step-like counter (step, iteration, num_updates, "
            "epoch, 'k/N', batch); the generic reader reads a log whose loss lines all carry one"
        )
    raise LogError(
        f"{p}: the loss lines carry different step-like counters (line {entries[0]['no']}: "
        f"{_counter_names(cs[0])}; line {entries[-1]['no']}: {_counter_names(cs[-1])}): no one step axis"
    )


def _counter_names(c: dict) -> str:
    names = {"explicit": "step", "fraction": "k/N", "own_epoch": "epoch", "batch": "batch"}
    return ", ".join(w for k, w in names.items() if c[k] is not None) or "none"


def _has_counter(c: dict) -> bool:
    return any(c[k] is not None for k in ("explicit", "fraction", "own_epoch", "batch"))


def _eval_rows(evals: list, step_of_line: dict):
    """Evaluation rows at the step of the training entry on or before their line."""
    if not evals or not step_of_line:
        return None
    nos = sorted(step_of_line)
    rows = []
    for ev in evals:
        i = bisect.bisect_right(nos, ev["no"])
        if i:
            rows.append({"step": step_of_line[nos[i - 1]], **{_eval_name(k): v for k, v in ev["values"].items()}})
    return _numeric_frame(pd.DataFrame(rows), keep_step=True) if rows else None


def _eval_name(k: str) -> str:
    return "val_loss" if k in ("val_loss", "valid_loss", "validation_loss", "valloss", "validloss") else k


def _int(v):
    """A whole, non-negative counter value, or None (a fractional epoch is progress, not a counter)."""
    if v is None:
        return None
    try:
        f = float(v)
    except ValueError:
        return None
    return int(f) if f == f and f >= 0 and f == int(f) and abs(f) < 2**53 else None


def _float(v: str):
    """'2.5' -> 2.5, 'nan' -> nan; anything else stays text (finalize names a non-numeric loss)."""
    try:
        return float(v)
    except ValueError:
        return v


def _is_negative(v) -> bool:
    return isinstance(v, float) and v < 0
