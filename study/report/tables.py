"""The study's tables from disk: what `gradvar study` left in runs_root (study.json and the run directories),
turned into one row per run (outcomes), the steps and probes of every run with the study's labels, and the
reference cross-entropies of the data. Reads only; writes nothing."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.records.load import load_runs

from ..stats.ngram import reference_losses
from ..stats.outcomes import TARGET_MARGIN, run_outcomes
from ..stats.within_lr import SIGNALS, common_window, early_max

LABELS = ("arm", "lr", "batch", "seed", "role")


@dataclass
class StudyTables:
    manifest: dict
    runs: list
    """analysis Run objects, in manifest order (finished runs only)."""
    outcomes: pd.DataFrame
    """One row per run: labels, outcomes over steps, final losses, early maxima of the noise signals."""
    steps: pd.DataFrame
    """Every run's steps with the labels (arm, lr, batch, seed, role)."""
    probes: pd.DataFrame
    """The equal-token length probe rows of every run, with the labels."""
    ref: dict
    """unigram, bigram, vocab, ln_vocab, target, measurable (the reference run reaches the target)."""
    window: tuple[int, int]
    """The common early window (first, last optimizer step) of the large-batch runs."""

    @property
    def n_seeds(self) -> int:
        """Seeds per (arm, LR, batch) cell at most: 1 means no verdict."""
        return int(self.outcomes.groupby(["arm", "lr", "batch"])["seed"].nunique().max()) if len(self.outcomes) else 0


def _summary(path: Path) -> dict:
    try:
        return json.loads((path / "summary.json").read_text())
    except (OSError, ValueError):
        return {}


def final_val_loss(run) -> float:
    """summary.json's final_val_loss, else the last evaluation's; NaN when neither exists or is finite."""
    value = _summary(run.path).get("final_val_loss")
    if value is None and len(run.evals) and "val_loss" in run.evals:
        value = run.evals.sort_values("step")["val_loss"].iloc[-1]
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _data_config(config: dict, cache_dir=None):
    from trainer.config import TrainConfig, apply_overrides

    data = dict(config.get("data") or {})
    if cache_dir:
        data["cache_dir"] = str(cache_dir)
    return apply_overrides(TrainConfig(), {"data": data}).data


def references(config: dict, cache_dir=None) -> dict:
    """unigram and bigram cross-entropies of the run's data (trainer.data, its cache built if missing), ln V and
    the target. NaN, with a note, when the tokens are not the ones the run trained on (another tokenizer or
    split than the run's config.json records)."""
    ref = reference_losses(_data_config(config, cache_dir))
    ref["ln_vocab"] = math.log(ref["vocab"])
    ref["target"] = ref["unigram"] - TARGET_MARGIN
    ran = ((config.get("meta") or {}).get("data")) or {}
    got = ref.pop("meta", {})
    differ = [k for k in ("tokenizer_sha256", "val_tokens", "train_tokens") if k in ran and ran[k] != got.get(k)]
    if differ:
        ref["note"] = (
            "the data differ from the runs' (" + ", ".join(f"{k} {got.get(k)} vs {ran[k]}" for k in differ) + ")"
        )
        ref["unigram"] = ref["bigram"] = ref["target"] = math.nan
    return ref


def _labels(spec: dict, run) -> dict:
    lab = spec.get("labels") or {}
    return {
        "arm": lab.get("method", run.method),
        "lr": float(lab.get("lr", run.lr)),
        "batch": int(lab.get("batch", run.batch_size)),
        "seed": int(run.seed if run.seed is not None else spec.get("overrides", {}).get("seed", 0)),
        "role": spec.get("role", "grid"),
    }


def load_study(runs_root, ref: dict | None = None, cache_dir=None) -> StudyTables:
    """Every finished run of the study in runs_root; `ref` (unigram, bigram, vocab...) is computed from the
    first run's data config (its tokenized data in `cache_dir`, default the config's) when not given."""
    runs_root = Path(runs_root)
    manifest = json.loads((runs_root / "study.json").read_text())
    specs = [s for s in manifest["runs"] if (runs_root / s["name"] / "summary.json").exists()]
    if not specs:
        raise FileNotFoundError(f"{runs_root}: no finished run of the study")
    runs = load_runs([runs_root / s["name"] for s in specs])
    if ref is None:
        ref = references(runs[0].config, cache_dir)
    ref.setdefault("ln_vocab", math.log(ref["vocab"]))
    labels = [_labels(s, r) for s, r in zip(specs, runs)]
    rows, steps, probes = [], [], []
    for lab, run in zip(labels, runs):
        s = run.steps.sort_values("step")
        optim, slw = run.config.get("optim") or {}, run.config.get("slw") or {}
        row = {"run": run.path.name, **lab, **run_outcomes(s, ref["target"], ref["ln_vocab"])}
        row |= {"final_val_loss": final_val_loss(run), "tokens": float(s["tokens"].max()) if len(s) else math.nan}
        row |= {"warmup_steps": int(optim.get("warmup_steps") or 0)}
        row |= {"slw_steps": int(slw.get("total_steps") or 0) if slw.get("enabled") else 0}
        rows.append(row)
        keep = [c for c in s.columns if c not in ("run", "method", "seed", "lr", "batch_size", "peak_lr")]
        steps.append(s[keep].assign(run=run.path.name, **lab))
        if len(run.probes):
            p = run.probes[[c for c in run.probes.columns if c not in ("run", "method", "seed", "lr", "peak_lr")]]
            probes.append(p.assign(run=run.path.name, **lab))
    out = pd.DataFrame(rows)
    large = out[out["batch"] == out["batch"].max()]
    window = common_window(large.to_dict("records"))
    steps_df = pd.concat(steps, ignore_index=True)
    by_run = dict(tuple(steps_df.groupby("run")))
    for sig in SIGNALS:
        out["early_max_" + sig] = [early_max(by_run[r], sig, window[1]) for r in out["run"]]
    ref_runs = out[out["role"] == "reference"]
    ref["measurable"] = bool(len(ref_runs)) and bool(np.isfinite(ref_runs["steps_to_target"]).all())
    probes_df = pd.concat(probes, ignore_index=True) if probes else pd.DataFrame()
    return StudyTables(manifest, runs, out, steps_df, probes_df, ref, window)
