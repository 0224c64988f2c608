"""Golden losses: the smoke preset's 20 steps (seed 0, CPU, one thread) against golden_smoke.txt, one
`step loss` per line, rtol 1e-4. A silent numerical change (model, data, sampler, LR, optimizer) fails here.

After an intended change, regenerate the file and commit it with the change that explains it:

    python tests/trainer/test_golden.py --update
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

GOLDEN = Path(__file__).with_name("golden_smoke.txt")
RTOL = 1e-4


def read_golden(path: Path = GOLDEN) -> dict[int, float]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            step, loss = line.split()
            out[int(step)] = float(loss)
    return out


def format_golden(steps, losses) -> str:
    head = "# step loss: smoke preset, seed 0, CPU fp32, 1 thread (python tests/trainer/test_golden.py --update)\n"
    return head + "".join(f"{int(s)} {float(v):.6f}\n" for s, v in zip(steps, losses))


def test_smoke_losses_match_golden(smoke_reference):
    golden = read_golden()
    steps = smoke_reference.steps
    assert list(steps["step"]) == sorted(golden), "the smoke run's step count changed"
    got = steps["loss"].to_numpy()
    want = np.array([golden[s] for s in steps["step"]])
    bad = ~np.isclose(got, want, rtol=RTOL, atol=0)
    assert not bad.any(), "losses differ from golden_smoke.txt (intended? run with --update):\n" + "\n".join(
        f"step {s}: got {g:.6f}, golden {w:.6f}" for s, g, w in zip(steps["step"][bad], got[bad], want[bad]))


def test_golden_file_format():
    golden = read_golden()
    assert list(golden) == list(range(1, 21)) and all(np.isfinite(v) for v in golden.values())
    assert golden[20] < golden[1]  # it learns


def update() -> None:
    """Rerun the reference configuration (as the `smoke_reference` fixture does) and rewrite the file."""
    import torch

    from trainer.config import apply_overrides
    from trainer.recipes import preset
    from trainer.train import Trainer

    import gradvar

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = apply_overrides(preset("smoke"), {"out_dir": tmp, "name": "ref", "data.cache_dir": f"{tmp}/data",
                                                "threads": 1})
        t = Trainer(cfg)
        try:
            t.run()
        finally:
            t.close()
        steps = gradvar.read_records(cfg.run_dir, ["steps"])["steps"]
    GOLDEN.write_text(format_golden(steps["step"], steps["loss"]))
    print(f"wrote {GOLDEN} ({len(steps)} steps, final loss {steps['loss'].iloc[-1]:.6f})")


if __name__ == "__main__":
    if sys.argv[1:] != ["--update"]:
        sys.exit("usage: python tests/trainer/test_golden.py --update")
    update()
