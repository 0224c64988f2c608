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


def test_eta_counts_the_step_cap(smoke, tmp_path):
    """--optim.max_steps 4 under a budget of ten million tokens: the run ends at step 4, and each progress line's
    ETA is the time of the steps left before the cap at the line's own rate, not of the token budget."""
    import re

    lines = []
    overrides = {"optim.max_steps": 4, "optim.train_tokens": 10_000_000, "log_every": 1}
    cfg = smoke.cfg(tmp_path, "capped", overrides)
    smoke.train(cfg, log=lambda msg, *a, **k: lines.append(msg))
    per_step = cfg.optim.batch_size * cfg.optim.seq_len
    seen = []
    for ln in lines:
        m = re.match(r"step\s+(\d+) \| loss .* \| ([\d,]+) tok/s.* \| ETA ([\d.]+) min$", ln)
        if m:
            step, rate, eta = int(m[1]), float(m[2].replace(",", "")), float(m[3])
            want = (4 - step) * per_step / rate / 60
            assert abs(eta - want) <= 0.05 + 1e-3 * want, (ln, want)  # printed to 0.1 min; the rate rounded
            seen.append(step)
    assert seen == [1, 2, 3, 4], lines
    assert smoke.steps(cfg.run_dir).step.max() == 4
