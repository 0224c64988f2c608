"""Does the offline analysis keep up with a long run? Writes a synthetic 1,000,000-step run with
gradvar.records.RecordWriter (as the trainer would: steps every step, layers every 100 steps for 16 groups
x 6 stats, probes every 1000 steps, evals every 10,000, flush every 1000 steps), then times load_run and the
full analysis (metrics + correlation + sequence length) against the 10 s goal.

    python benchmarks/analysis_scale.py                    # 1 M steps in a temp dir, removed afterwards
    python benchmarks/analysis_scale.py --steps 100000     # quicker
    python benchmarks/analysis_scale.py --dir /tmp/big     # keep (and reuse) the synthetic run
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.records.load import load_run  # noqa: E402
from analysis.records.metrics import run_metrics  # noqa: E402
from analysis.records.ranking import analyze_runs, ranking  # noqa: E402
from analysis.records.seqlen import probe_variance_by_length, seqlen_hypothesis, step_variance_by_seqlen  # noqa: E402
from gradvar.records import RecordWriter  # noqa: E402
from gradvar.schema import STEPS, STEPS_EXTRA  # noqa: E402

GOAL_S = 10.0
FLUSH_EVERY = 1000
LAYER_EVERY = 100
PROBE_EVERY = 1000
EVAL_EVERY = 10_000
GROUPS = (
    ["wte", "wpe"] + [f"h.{i}.{part}" for i in range(3) for part in ("attn", "mlp", "ln_1", "ln_2")] + ["ln_f", "head"]
)
LAYER_STATS = ("adam_v_max", "adam_v_l1", "grad_norm", "grad_trace_sigma", "grad_true_sq", "update_rms")
LADDER = (64, 128, 256, 512)


def _step_chunk(lo: int, hi: int, rng) -> pd.DataFrame:
    """Steps lo..hi-1 of a decaying loss with a planted spike every 50,000 steps, and its signals."""
    step = np.arange(lo, hi)
    n = len(step)
    loss = 3.0 + 6.0 * np.exp(-step / 20_000) + 0.02 * rng.standard_normal(n)
    phase = step % 50_000
    loss = np.where((phase >= 25_000) & (phase < 25_005), loss * 1.5, loss)
    v = 1e-4 * np.exp(0.1 * rng.standard_normal(n)) * np.where((phase >= 24_997) & (phase < 25_000), 30.0, 1.0)
    cols = {c: np.full(n, np.nan) for c in STEPS + STEPS_EXTRA}
    cols.update(
        step=step,
        tokens=step * 8 * 512,
        seqlen=np.full(n, 512),
        batch_size=np.full(n, 8),
        lr=np.full(n, 3e-4),
        loss=loss,
        loss_max=loss * 1.01,
        grad_norm=np.sqrt(v) * 100,
        adam_v_max=v,
        adam_v_l1=v * 1e4,
        adam_v_min=v * 1e-6,
        grad_trace_sigma=v * 50,
        grad_true_sq=v * 10,
        grad_noise_scale=np.full(n, 5.0),
        grad_var_max=v * 2,
        grad_var_sum=v * 1e3,
        update_rms=1e-3 * np.exp(0.1 * rng.standard_normal(n)),
        nonfinite_loss=np.zeros(n),
        nonfinite_grad=np.zeros(n),
        time_s=np.full(n, 0.25),
        tokens_per_s=np.full(n, 16e3),
        probe_loss=np.where(step % PROBE_EVERY == 0, loss + 0.1, np.nan),
        world_size=np.ones(n),
    )
    return pd.DataFrame(cols)


def _layer_rows(steps: pd.DataFrame, rng) -> list[dict]:
    rows = []
    for _, r in steps[steps["step"] % LAYER_EVERY == 0].iterrows():
        vals = r["adam_v_max"] * np.exp(0.2 * rng.standard_normal((len(GROUPS), len(LAYER_STATS))))
        for gi, g in enumerate(GROUPS):
            for si, s in enumerate(LAYER_STATS):
                rows.append(
                    {
                        "step": int(r["step"]),
                        "tokens": int(r["tokens"]),
                        "seqlen": 512,
                        "group": g,
                        "stat": s,
                        "value": float(vals[gi, si]),
                    }
                )
    return rows


def _probe_rows(step: int, tokens: int, rng) -> list[dict]:
    return [
        {
            "step": step,
            "tokens": tokens,
            "seqlen": 512,
            "probe_seqlen": L,
            "probe_tokens": 4 * 512,
            "loss": 4.0 + 64 / L,
            "grad_norm": 1.0,
            "grad_trace_sigma": 10.0 / L,
            "grad_trace_sigma_per_token": 10.0 * 4,
            "grad_true_sq": 1.0,
            "grad_noise_scale": 10.0 / L,
            "grad_sq_max": 1e-4 * (1 + L / 512) * (1 + 0.1 * rng.random()),
            "grad_sq_max_micro": 2e-4 * (1 + L / 512) * (1 + 0.1 * rng.random()),
        }
        for L in LADDER
    ]


def write_synthetic_run(run_dir: Path, n_steps: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    writer = RecordWriter(run_dir)
    for lo in range(1, n_steps + 1, FLUSH_EVERY):
        chunk = _step_chunk(lo, min(lo + FLUSH_EVERY, n_steps + 1), rng)
        writer.append("steps", chunk.to_dict("records"))
        writer.append("layers", _layer_rows(chunk, rng))
        for _, r in chunk[chunk["step"] % PROBE_EVERY == 0].iterrows():
            writer.append("probes", _probe_rows(int(r["step"]), int(r["tokens"]), rng))
        for _, r in chunk[chunk["step"] % EVAL_EVERY == 0].iterrows():
            writer.append(
                "evals",
                {
                    "step": int(r["step"]),
                    "tokens": int(r["tokens"]),
                    "seqlen": 512,
                    "val_loss": float(r["loss"]) + 0.1,
                    "val_ppl": float(np.exp(r["loss"] + 0.1)),
                    "time_s": float(r["step"]) * 0.25,
                },
            )
        writer.flush()
    writer.close()
    cfg = {
        "name": "synthetic-1M",
        "seed": seed,
        "model": {"n_positions": 512},
        "optim": {"lr": 3e-4, "batch_size": 8, "seq_len": 512},
        "slw": {"enabled": False},
        "meta": {"method": "baseline", "machine": "synthetic"},
    }
    (run_dir / "config.json").write_text(json.dumps(cfg))


def time_analysis(run_dir: Path) -> dict[str, float]:
    times = {}
    t0 = time.perf_counter()
    run = load_run(run_dir)
    times["load_run"] = time.perf_counter() - t0
    t = time.perf_counter()
    run_metrics(run)
    times["metrics"] = time.perf_counter() - t
    t = time.perf_counter()
    ranking(analyze_runs([run]))
    times["correlation"] = time.perf_counter() - t
    t = time.perf_counter()
    probe_variance_by_length(run.probes)
    seqlen_hypothesis(run.probes)
    step_variance_by_seqlen(run.steps)
    times["seqlen"] = time.perf_counter() - t
    times["total"] = time.perf_counter() - t0
    print(
        f"rows: steps {len(run.steps):,}  layers {len(run.layers):,}  probes {len(run.probes):,}  "
        f"evals {len(run.evals):,}"
    )
    return times


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1_000_000)
    ap.add_argument("--dir", type=Path, default=None, help="keep the synthetic run here (reused if present)")
    args = ap.parse_args(argv)
    tmp = None
    run_dir = args.dir
    if run_dir is None:
        tmp = tempfile.mkdtemp(prefix="gradvar-bench-")
        run_dir = Path(tmp) / "run"
    try:
        if not (run_dir / "config.json").exists():
            t = time.perf_counter()
            write_synthetic_run(run_dir, args.steps)
            print(f"wrote {args.steps:,} synthetic steps to {run_dir} in {time.perf_counter() - t:.1f} s")
        times = time_analysis(run_dir)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    for k, v in times.items():
        print(f"{k:>12}: {v:6.2f} s")
    ok_load, ok_total = times["load_run"] < GOAL_S, times["total"] < GOAL_S
    print(f"load_run < {GOAL_S:.0f} s: {'PASS' if ok_load else 'FAIL'} ({times['load_run']:.2f} s)")
    print(f"load + full analysis < {GOAL_S:.0f} s: {'PASS' if ok_total else 'FAIL'} ({times['total']:.2f} s)")
    return 0 if ok_load else 1


if __name__ == "__main__":
    sys.exit(main())
