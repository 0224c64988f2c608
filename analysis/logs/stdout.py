"""Console output of nanoGPT, llm.c, build-nanogpt, Megatron-LM, litgpt, mlx_lm and modded-nanogpt: one training
step per line.

    iter 100: loss 4.8186, time 1537.05ms, mfu 14.52%                                     (nanoGPT)
    step    1/19560 | loss 11.010252 (+nanz)| norm 15.1374 (+nanz)| lr 8.57e-07 | ...    (llm.c, CUDA)
    step 0: train loss 5.356189 (took 1452.121000 ms)                                      (llm.c, CPU)
    step 0 | loss: 10.9677 | dt: 25213.31ms | tok/sec: 5198.52 | norm: 6.74 | lr: 0.00001  (build-nanogpt)
     iteration        3/    1000 | ... | lm loss: 4.424266E+01 | loss scale: 12.0 | grad norm: 77.479 | ...
    iter 1151 step 144: loss 1.7019, iter time: 1106.53ms (optimizer.step)                 (litgpt)
    Iter 25: Train loss 1.593, Learning Rate 7.000e-05, It/sec 0.999, ...                  (mlx_lm)
    step:946/1530 train_loss:5.0685 train_time:159103ms step_avg:169.98ms                  (modded-nanogpt)

A line that starts (after '[...]' stamps, a date-time stamp, a 'N:' rank prefix or the '> ' of a log quoted in a
GitHub issue) with iteration/iter/step and a number is a step line; its '|'- or ','-separated 'name value' or
'name: value' pairs, or its space-separated 'name:value' tokens, become columns. litgpt's 'iter N step M' keeps
the iteration (one line per micro-batch; the optimizer step repeats). A line that also carries a val/validation
value is an evaluation line (nanoGPT's 'step 250: train loss ..., val loss ...'). Everything else (banners,
memory reports, generated text) is skipped.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from ..errors import LogError
from .llamafactory import merge_ranks
from .table import LogData, _numeric_frame, finalize

_STAMPS = (
    r"\s*(?:>\s*)?(?:\[[^\]]*\]\s*)*(?:\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:[.,]\d+)?\s+)?(?:\d+:\s+)?"
    r"(?:iter_dt\s+[\d.]+m?s;\s*)?"  # minGPT: 'iter_dt 30.56ms; iter 100: train loss 2.41'
)
_STEP_LINE = re.compile(
    rf"^{_STAMPS}(?:iteration|iter|step)(?:\s+|:)(\d+)(?:\s*/\s*\d+)?(?:\s+step\s+\d+)?\s*[:|,]?(.*)$", re.IGNORECASE
)
_NUM = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?nan|[+-]?inf"
_PAIR = re.compile(rf"^([A-Za-z][A-Za-z0-9 _/().%-]*?)\s*[:=]?\s+({_NUM})(?:ms|s|%)?(?![\w.])", re.IGNORECASE)
_TOKEN = re.compile(rf"(?:^|\s)([A-Za-z][A-Za-z0-9_/]*):({_NUM})(?:ms|s|%)?(?=\s|$)", re.IGNORECASE)
_EVAL_KEY = re.compile(r"^(val|valid|validation|eval|test)(?:\b|_)", re.IGNORECASE)


def looks_like_stdout(text: str, sample: int = 400) -> bool:
    """Whether at least two of the first `sample` non-blank lines are step lines with a loss in them."""
    hits = 0
    for line in [ln for ln in text.splitlines() if ln.strip()][:sample]:
        parsed = parse_line(line)
        if parsed and any("loss" in k.lower() for k in parsed[1]):
            hits += 1
            if hits >= 2:
                return True
    return False


def parse_line(line: str):
    """(step, {name: value string}) for a step line, else None."""
    m = _STEP_LINE.match(line)
    if not m:
        return None
    pairs = {}
    for seg in re.split(r"[|,]", m.group(2)):
        pm = _PAIR.match(seg.strip())
        if pm and pm.group(1).strip().lower() not in pairs:
            pairs[pm.group(1).strip()] = pm.group(2)
    if not pairs:  # modded-nanogpt: 'train_loss:3.59 train_time:159279ms', no separators, no spaces
        pairs = dict(_TOKEN.findall(m.group(2)))
    return (int(m.group(1)), pairs) if pairs else None


def load_stdout(p: Path, text: str) -> LogData:
    """LogData from console output; rank copies of a step are merged, a step that goes back is a resume."""
    rows, labels, evals = [], [], []
    for no, line in enumerate(text.splitlines(), start=1):
        parsed = parse_line(line)
        if not parsed:
            continue
        step, pairs = parsed
        if any(_EVAL_KEY.match(k) for k in pairs):
            ev = {_eval_name(k): v for k, v in pairs.items() if _EVAL_KEY.match(k)}
            train = next((v for k, v in pairs.items() if _eval_name(k) == "train_loss"), None)
            evals.append({"step": step, **ev, **({"train_loss": train} if train is not None else {})})
            continue
        rows.append({"step": step, **pairs})
        labels.append(f"line {no}")
    if not rows and any("train_loss" in e for e in evals):
        # Char-level trainers (nanoGPT's shakespeare_char, minGPT ports) may print only the eval-interval
        # line 'step 500: train loss 2.54, val loss 2.55': its train loss is the log's loss.
        rows = [{"step": e["step"], "loss": e.pop("train_loss")} for e in evals if "train_loss" in e]
        labels = [f"step {r['step']}" for r in rows]
    for e in evals:
        e.pop("train_loss", None)  # kept only for the char-level case above; the eval table holds eval values
    evals = [e for e in evals if len(e) > 1]
    if not rows:
        raise LogError(f"{p}: no training step lines with a loss (console log)")
    rows, labels, notes, resumes = merge_ranks(rows, labels, key="step")
    cols = list(dict.fromkeys(k for r in rows for k in r))
    raw = pd.DataFrame([[r.get(c) for c in cols] for r in rows], columns=range(len(cols)), dtype=object)
    raw.columns = cols
    log = finalize(raw, labels, str(p), "stdout")
    log.notes[:0] = notes
    if resumes:
        log.meta["resume_steps"] = resumes
    if evals:
        log.eval_df = _numeric_frame(pd.DataFrame(evals), keep_step=True)
    return log


def _eval_name(key: str) -> str:
    k = re.sub(r"[^0-9a-z]+", "_", key.lower()).strip("_")
    return "val_loss" if k in ("val", "val_loss", "validation_loss", "valid_loss") else k
