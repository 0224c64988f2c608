"""What the trainer says in its log about the run it records."""

import pytest


@pytest.mark.parametrize("micro", [2, 4])
def test_one_micro_batch_per_step_is_said_in_the_log(smoke, tmp_path, micro):
    """batch 4: micro-batches of 4 leave the gradient-variance columns NaN, and the log says how to fill them."""
    lines = []
    cfg = smoke.cfg(tmp_path, f"m{micro}", {"optim.micro_batch_size": micro, "optim.train_tokens": 3 * 4 * 128})
    smoke.train(cfg, log=lambda msg, *a, **k: lines.append(msg))
    said = [ln for ln in lines if ln.startswith("note: one micro-batch per step")]
    steps = smoke.steps(cfg.run_dir)
    if micro == 4:
        assert len(said) == 1 and "--optim.micro_batch_size 2" in said[0]
        assert steps.grad_trace_sigma.isna().all()
    else:
        assert not said and steps.grad_trace_sigma.notna().all()
