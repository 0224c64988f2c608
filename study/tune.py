"""`gradvar tune-slw`: the paper's low-cost SLW tuning rule.

1. Start length 8 for small models (64 at billion scale); raised (x2, up to 64) when the trial with the
   shortest T already diverges early (non-finite or exploding validation loss).
2. Duration T: short trials of `multiples` x the LR warmup (at least `min_horizon` steps), one per candidate
   T in {1, 2, 4, 8, 16, 32} x warmup, evaluated every `eval_every` steps on the fixed full-length held-out
   batches. A trial *fluctuates significantly* when its validation perplexity rises by more than `tol`
   (default 5%, i.e. 0.049 nats) between two consecutive evaluations. The fixed validation windows make
   evaluation itself noiseless, so any rise is the model's; 5% sits above the eval-to-eval wiggles of our
   stable CPU reference runs. The largest T without a significant fluctuation is chosen.
The choice is written as a config the trainer takes: `gradvar train --config OUT/slw.json`.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

import gradvar

from .grid import Grid, RunSpec, run_all


def fluctuation(val_loss: np.ndarray) -> float:
    """Largest relative perplexity rise between consecutive evaluations (inf when non-finite)."""
    v = np.asarray(val_loss, dtype=float)
    if len(v) == 0 or not np.all(np.isfinite(v)):
        return math.inf
    return float(np.max(np.exp(np.diff(v)) - 1.0, initial=0.0))


def choose_t(results: dict[int, float], tol: float) -> int | None:
    """The largest T whose fluctuation stays within tol (None if every T fluctuates)."""
    ok = [t for t, f in results.items() if f <= tol]
    return max(ok) if ok else None


def trial_specs(start: int, ts: list[int], horizon: int, eval_every: int, base: dict) -> list[RunSpec]:
    return [
        RunSpec(
            f"start{start}-T{t}",
            {
                **base,
                "slw.enabled": True,
                "slw.min_seqlen": start,
                "slw.total_steps": t,
                "optim.max_steps": horizon,
                "eval.every": eval_every,
                "checkpoint.every": 0,
                "monitor.quantities": "minimal",
            },
            f"T{t}",
        )
        for t in ts
    ]


def evaluate_trials(out_root: Path, specs: list[RunSpec]) -> dict[int, float]:
    res = {}
    for spec in specs:
        t = int(spec.overrides["slw.total_steps"])
        try:
            evals = gradvar.read_records(out_root / spec.name, ["evals"])["evals"]
            res[t] = fluctuation(evals.sort_values("step").val_loss.to_numpy())
        except FileNotFoundError:
            res[t] = math.inf
    return res


def tune(
    preset: str,
    overrides: dict,
    out_root: Path,
    warmup: int,
    n_params_large: bool,
    multiples: int = 3,
    min_horizon: int = 30,
    tol: float = 0.05,
    eval_every: int = 3,
    jobs: int = 2,
    log=print,
) -> dict:
    start = 64 if n_params_large else 8
    horizon = max(multiples * warmup, min_horizon)
    ts = [m * warmup for m in (1, 2, 4, 8, 16, 32)]
    evidence = []
    while True:
        specs = trial_specs(start, ts, horizon, eval_every, overrides)
        run_all(Grid(f"tune-start{start}", preset, specs, jobs), out_root, jobs, log=log)
        results = evaluate_trials(out_root, specs)
        evidence.append({"start": start, "fluctuation": results})
        if math.isinf(results[min(ts)]) and start < 64:
            start *= 2  # diverged early even with the fastest warmup: start longer
            continue
        break
    chosen = choose_t(results, tol)
    return {
        "start": start,
        "T": chosen,
        "horizon_steps": horizon,
        "tol": tol,
        "evidence": evidence,
        "trial_steps": len(ts) * horizon * len(evidence),
    }


def main_tune(args) -> int:
    from trainer.config import ConfigError, apply_overrides
    from trainer.recipes import preset

    try:
        overrides = args.overrides
        cfg = apply_overrides(preset(args.preset), dict(overrides)).validate()
    except ConfigError as exc:
        print(f"gradvar tune-slw: error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.output)
    large = cfg.model.n_layer * cfg.model.n_embd**2 * 12 > 1e9
    result = tune(
        args.preset, overrides, out, cfg.optim.warmup_steps, large, args.multiples, tol=args.tol, jobs=args.jobs
    )
    for ev in result["evidence"]:
        print(
            f"start {ev['start']}: "
            + ", ".join(
                f"T={t}: {f:+.1%}" if math.isfinite(f) else f"T={t}: diverged" for t, f in ev["fluctuation"].items()
            )
        )
    (out / "tune.json").write_text(json.dumps(result, indent=2, default=str))
    if result["T"] is None:
        (out / "slw.json").unlink(missing_ok=True)  # an earlier tuning's choice would no longer be this one's
        print(f"every T fluctuated by more than {args.tol:.0%}: lower the peak LR or lengthen the LR warmup")
        return 1
    cfg_out = {
        "slw": {
            "enabled": True,
            "schedule_type": "fixed_linear",
            "min_seqlen": result["start"],
            "total_steps": result["T"],
            "difficulty_step": 8,
        }
    }
    (out / "slw.json").write_text(json.dumps(cfg_out, indent=2))
    print(
        f"chosen: start length {result['start']}, T = {result['T']} steps "
        f"(largest T with validation perplexity rising < {args.tol:.0%} between evaluations over the first "
        f"{result['horizon_steps']} steps); cost {result['trial_steps']} trial steps"
    )
    print(f"use it: gradvar train --preset {args.preset} --config {out / 'slw.json'}")
    return 0


def main(argv=None) -> int:
    """`python -m study.tune ...`: the same command as `gradvar tune-slw ...`."""
    from gradvar.cli import Parser

    from .cli import register_tune

    parser = Parser(prog="gradvar")
    register_tune(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["tune-slw", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
