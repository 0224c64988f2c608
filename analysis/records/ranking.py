"""Every signal of every run against its loss ratio, and pooled over runs: correlations, lags and early warning
(the primitives are in analysis.records.correlate and analysis.records.warning); then the signals ranked."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .correlate import MAX_LAG, N_BOOT, N_BOOT_GROUPS, _lag_side, _lags, correlation
from .signals import STEP_SIGNALS, Signal, align_to, in_spans, run_signals, target_of
from .warning import ALARM_Q, HORIZON, TRANSFORMS, WINDOW, early_warning, rolling_prev, transform, warning_scores


def _spacing(step: np.ndarray) -> float:
    return float(np.median(np.diff(step))) if len(step) > 1 else 1.0


def analyze_runs(
    runs,
    source: str = "train",
    signals=STEP_SIGNALS,
    groups: bool = True,
    transforms=TRANSFORMS,
    max_lag: int = MAX_LAG,
    horizon: int = HORIZON,
    window: int = WINDOW,
    q: float = ALARM_Q,
    n_boot: int = N_BOOT,
    seed: int = 0,
    n_boot_groups: int = N_BOOT_GROUPS,
) -> dict[str, pd.DataFrame]:
    """Correlations, lagged correlations and early-warning scores per run and pooled (run == 'pooled').

    Returns {"correlations", "lags", "early_warning"}; `source` picks the training loss ratio or the
    probe loss ratio as the target. Per-group variants use `n_boot_groups` resamples.
    """
    opts = {
        "transforms": transforms,
        "max_lag": max_lag,
        "horizon": horizon,
        "window": window,
        "q": q,
        "seed": seed,
        "n_boot": n_boot,
        "n_boot_groups": n_boot_groups,
    }
    # With one run the pooled rows are that run's rows: keep no copies of its series for pooling.
    acc = {"corr": [], "lags": [], "warn": [], "pool": {}, "ranks": {}, "sides": {}, "pooling": len(runs) > 1}
    for k, run in enumerate(runs):
        target = target_of(run, source)
        for sig in run_signals(run, signals, groups):
            _analyze_signal(k, run, sig, target, acc, opts)
    out = {
        "correlations": pd.DataFrame(acc["corr"]),
        "lags": _stack(acc["lags"]),
        "early_warning": pd.DataFrame(acc["warn"]),
    }
    return _with_pooled(out, runs, acc["pool"], opts)


def _analyze_signal(k, run, sig: Signal, target, acc: dict, o: dict) -> None:
    """All transforms of one signal of one run against the target; rows go into `acc`."""
    tgt_step, ratio, spans = target
    ident = {"run": run.name, "method": run.method, "signal": sig.name, "stat": sig.stat, "group": sig.group}
    y = align_to(sig.step, tgt_step, ratio)
    y_key = (k, hash(sig.step.tobytes()))  # signals sampled at the same steps share the target
    if y_key not in acc["sides"]:
        acc["sides"] = {y_key: _lag_side(y)}  # one target at a time
    n_boot = o["n_boot"] if sig.group == "all" else o["n_boot_groups"]
    median, thr = rolling_prev(sig.x, o["window"], (0.5, o["q"]))  # one pass for the lrm and the alarm
    for tr in o["transforms"]:
        xt = transform(sig.x, tr, o["window"], median=median)
        acc["corr"].append(
            ident
            | {"transform": tr}
            | correlation(xt, y, n_boot=n_boot, seed=o["seed"], y_key=y_key, cache=acc["ranks"])
        )
        lag = _lags(xt, y, o["max_lag"], acc["sides"][y_key])
        acc["lags"].append(ident | {"transform": tr, "lag_steps": lag["lag"] * _spacing(sig.step)} | lag)
        if acc["pooling"]:
            _pool_add(acc["pool"], (sig.name, tr), xt, y, k, o["max_lag"], _spacing(sig.step), n_boot)
    inside = in_spans(sig.step, spans)
    frame, leads, scores = early_warning(sig.x, sig.step, spans[:, 0], inside, o["horizon"], o["window"], o["q"], thr)
    acc["warn"].append(ident | scores)
    if acc["pooling"]:
        _pool_add_warning(acc["pool"], sig.name, frame, len(spans), leads)


def _stack(items: list[dict]) -> pd.DataFrame:
    """Rows of dicts holding equal-length arrays (one per lag) and scalars (repeated) as one frame."""
    if not items:
        return pd.DataFrame()
    lengths = [len(it["lag"]) for it in items]
    cols = {}
    for key in items[0]:
        vals = [it[key] for it in items]
        cols[key] = (
            np.concatenate(vals)
            if isinstance(vals[0], np.ndarray)
            else np.repeat(np.array(vals, dtype=object), lengths)
        )
    return pd.DataFrame(cols).infer_objects()


def _pool_add(pool, key, x, y, k, max_lag, spacing, n_boot) -> None:
    # NaN padding between runs keeps lagged pairs from straddling two runs.
    entry = pool.setdefault(key, {"x": [], "y": [], "seg": [], "spacing": spacing, "n_boot": n_boot})
    pad = np.full(max_lag, np.nan)
    entry["x"] += [x, pad]
    entry["y"] += [y, pad]
    entry["seg"] += [np.full(len(x), k), np.full(max_lag, k)]


def _pool_add_warning(pool, name, frame, n_events, leads) -> None:
    entry = pool.setdefault(("warn", name), {"frames": [], "events": 0, "leads": []})
    entry["frames"].append(frame)
    entry["events"] += n_events
    entry["leads"] += leads


def _with_pooled(out, runs, pool, o: dict) -> dict[str, pd.DataFrame]:
    """Append the pooled rows; with a single run they are the run's rows relabelled."""
    if len(runs) <= 1:
        for key, df in out.items():
            if len(df):
                out[key] = pd.concat([df, df.assign(run="pooled", method="pooled")], ignore_index=True)
        return out
    if not pool:
        return out
    corr, lags, warn = [], [], []
    for key, entry in pool.items():
        if key[0] == "warn":
            frame = pd.concat(entry["frames"], ignore_index=True)
            warn.append({"signal": key[1]} | warning_scores(frame, entry["events"], entry["leads"]))
            continue
        x, y, seg = (np.concatenate(entry[c]) for c in ("x", "y", "seg"))
        ident = {"signal": key[0], "transform": key[1]}
        corr.append(ident | correlation(x, y, segments=seg, n_boot=entry["n_boot"], seed=o["seed"]))
        lag = _lags(x, y, o["max_lag"])
        lags.append(ident | {"lag_steps": lag["lag"] * entry["spacing"]} | lag)
    meta = out["correlations"][["signal", "stat", "group"]].drop_duplicates("signal")
    pooled = {"correlations": pd.DataFrame(corr), "lags": _stack(lags), "early_warning": pd.DataFrame(warn)}
    return {
        key: pd.concat(
            [out[key], df.merge(meta, on="signal", how="left").assign(run="pooled", method="pooled")], ignore_index=True
        )
        if len(df)
        else out[key]
        for key, df in pooled.items()
    }


def ranking(result: dict[str, pd.DataFrame], run: str = "pooled") -> pd.DataFrame:
    """(signal, transform) ranked by |Spearman r| with the loss ratio, with CI, best lag and AUROC."""
    c = result["correlations"]
    if not len(c):
        return pd.DataFrame()
    c = c[c["run"] == run].copy()
    lags = result["lags"]
    lags = lags[(lags["run"] == run) & lags["r"].notna()]
    if len(lags):
        best = lags.loc[lags["r"].abs().groupby([lags["signal"], lags["transform"]]).idxmax()]
        best = best[["signal", "transform", "lag", "lag_steps", "r"]].rename(
            columns={"lag": "best_lag", "lag_steps": "best_lag_steps", "r": "r_at_best_lag"}
        )
        c = c.merge(best, on=["signal", "transform"], how="left")
    ew = result["early_warning"]
    if len(ew):
        ew = ew[ew["run"] == run][["signal", "auroc", "precision", "recall", "median_lead"]]
        c = c.merge(ew, on="signal", how="left")
    c = c.assign(abs_spearman=c["spearman_r"].abs()).sort_values("abs_spearman", ascending=False, na_position="last")
    c.insert(0, "rank", np.arange(1, len(c) + 1))
    return c.drop(columns=["abs_spearman"]).reset_index(drop=True)


def aligned(run, signal: str, transform_kind: str = "raw", source: str = "train", window: int = WINDOW) -> pd.DataFrame:
    """(step, value, loss_ratio) of one signal of one run, for scatter plots."""
    sig = next((s for s in run_signals(run) if s.name == signal), None)
    if sig is None:
        return pd.DataFrame(columns=["step", "value", "loss_ratio"])
    tgt_step, ratio, _ = target_of(run, source)
    return pd.DataFrame(
        {
            "step": sig.step,
            "value": transform(sig.x, transform_kind, window),
            "loss_ratio": align_to(sig.step, tgt_step, ratio),
        }
    )
