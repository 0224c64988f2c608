"""What the monitor costs in memory traffic, and the capture shortcuts that keep it low.

On a GPU the monitor's cost is the parameter-sized buffers its kernels stream. `benchmarks/param_traffic.py`
counts the bytes each aten op reads and writes; a monitored and a bare step of the same model differ by
exactly what the monitor adds, in "parameter passes" (4 bytes per parameter). The bounds below are the
counts measured when they were written: a change that adds a pass over the gradients or Adam's state fails
here, on a CPU, long before anyone times it on a GPU.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from gv_helpers import accumulate, tiny_gpt2

import gradvar

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import param_traffic  # noqa: E402
from param_traffic import Traffic  # noqa: E402

PASSES = {("paper", 1): 6, ("paper", 2): 8, ("full", 1): 13, ("full", 2): 26}
"""Parameter passes per step added by the monitor, as counted for gpt2-117m (python benchmarks/param_traffic.py):
paper, one micro-batch: Adam's state 3 (v's min and max in one read, its L1, m's norm) + non-finite gradient
count 3 + the gradient read 1 - 1 (Monitor.clip_grad_norm_ reuses that read: torch's clipping reads .grad once
more). Two micro-batches add 2: the second micro-batch's norm, and .grad read twice (after the first pass, for
|h_1|^2, and after the last). A step without grad_var_max (paper: all but one in 20) keeps no element-wise
moment; full keeps it at every step (h_1^2 written, h_2^2 accumulated, the variance formed in place and its
maximum: 11 passes at K = 2) and adds the parameter snapshot and the update size (7)."""
ACTIVATIONS = {"paper": 0.0, "full": 1.0}
"""Per micro-batch: full's output-logit maximum reads the logits: nothing next to gpt2-117m's parameters, about
one pass on the tiny model here (its 64-token vocabulary x 2 sequences x 16 positions against 8k parameters)."""


def run_steps(mode: str, micro: int, tmp_path, n: int = 2):
    """Bytes moved by `n` steps of a tiny GPT-2 (after two to build Adam's state), and its parameter count."""
    model = tiny_gpt2()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    mon = (
        None
        if mode == "none"
        else gradvar.Monitor(model, opt, tmp_path / mode, mode, flush_every=10**6, handle_sigterm=False)
    )
    data = torch.randint(0, 64, (2 * micro, 16), generator=torch.Generator().manual_seed(0))

    def step():
        accumulate(model, data.split(2))
        if mon is None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        else:
            mon.clip_grad_norm_(1.0)
        opt.step()
        if mon is not None:
            mon.step()
        opt.zero_grad(set_to_none=True)

    step(), step()
    with Traffic() as t:
        for _ in range(n):
            step()
    if mon is not None:
        mon.close()
    return t.bytes / n, sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("mode,micro", list(PASSES), ids=[f"{m}-K{k}" for m, k in PASSES])
def test_monitor_adds_no_more_parameter_passes_than_counted(tmp_path, mode, micro):
    bare, n = run_steps("none", micro, tmp_path)
    monitored, _ = run_steps(mode, micro, tmp_path)
    added = (monitored - bare) / (4 * n)
    # small tensors (scalars, per-group vectors) add a fraction of a pass on this tiny model
    bound = PASSES[mode, micro] + ACTIVATIONS[mode] * micro + 0.5
    assert added < bound, f"{mode} K={micro}: {added:.2f} parameter passes per step"
    assert added > PASSES[mode, micro] - 1, "the count fell: lower the bound in PASSES (and say so in the README)"


@pytest.fixture(scope="module")
def gpt2_counts():
    """paper on gpt2-117m's 148 tensors at width 64 (their byte count in proportion, small vectors aside), K = 1,
    2, 4, 8; a K >= 2 count also runs the step with grad_var_max."""
    return {k: param_traffic.count("gpt2-117m", "paper", k, width=64) for k in (1, 2, 4, 8)}


@pytest.mark.parametrize("k", [1, 2, 4, 8])
def test_paper_adds_at_most_two_passes_per_micro_batch_and_five_per_step(gpt2_counts, k):
    """The bound at every K <= 8: on a step without grad_var_max and as the mean over the steps (one in
    ELEMENTWISE_EVERY measures it). The count is K + 6 for K >= 2 (6 at K = 1): K - 1 micro-batch norms, two
    reads of .grad, Adam's state 3, the non-finite count 3, less torch's clipping read that the monitor's
    clipping shares."""
    c = gpt2_counts[k]
    assert c.passes <= 2 * k + 5 and c.mean_passes <= 2 * k + 5, (c.passes, c.mean_passes)
    assert c.passes == pytest.approx(6 if k == 1 else k + 6, abs=0.05)
    # the measured step reads .grad once (K = 1) or twice (|h_1|^2 after the first pass, the last pass's .grad)
    assert c.by_source["gradvar/capture.py:_read_end"] == pytest.approx(min(k, 2), abs=0.05)
    if k >= 2:  # h_1^2 written (2), h_k^2 accumulated (4 each, h_k counted twice), the variance formed (4) and its max
        assert c.sampled_passes == pytest.approx(4 * k + 3, abs=0.1)


def test_ops_per_step_stay_flat_in_k(gpt2_counts):
    """Each op is a kernel launch on a GPU: one norm per micro-batch and a fixed number per step, none per
    parameter per micro-batch (Adam's min and max: one aminmax per tensor, once per step)."""
    ops = {k: c.mean_ops for k, c in gpt2_counts.items()}
    assert ops[1] < 2 * 148 and ops[8] - ops[1] <= 2 * 7 + 2, ops


def test_monitor_clip_equals_torch_clip(tmp_path):
    """Monitor.clip_grad_norm_ reuses the monitor's norms; the clipped gradients are torch's, to rounding."""
    x = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(3))
    out = []
    for use_monitor in (False, True):
        model = tiny_gpt2()
        opt = torch.optim.SGD(model.parameters(), lr=0.0)
        mon = gradvar.Monitor(model, opt, tmp_path / str(use_monitor), "paper") if use_monitor else None
        accumulate(model, x.split(2))
        norm = mon.clip_grad_norm_(0.01) if use_monitor else torch.nn.utils.clip_grad_norm_(model.parameters(), 0.01)
        out.append((norm.item(), torch.cat([p.grad.reshape(-1) for p in model.parameters()])))
        if mon is not None:
            opt.step(), mon.step(), mon.close()
    (norm_ref, g_ref), (norm, g) = out
    assert norm == pytest.approx(norm_ref, rel=1e-6) and norm > 0.01
    torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-12)


def clip_once(tmp_path, max_norm: float):
    """(gradients before, after, returned norm, bytes moved by the clip call, parameter count, steps row)."""
    model = tiny_gpt2()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    mon = gradvar.Monitor(model, opt, tmp_path / str(max_norm), "paper")
    accumulate(model, torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(4)).split(2))
    before = torch.cat([p.grad.reshape(-1) for p in model.parameters()]).clone()
    with Traffic() as t:
        norm = mon.clip_grad_norm_(max_norm)
    after = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    opt.step(), mon.step(), mon.close()
    row = gradvar.read_records(tmp_path / str(max_norm))["steps"].iloc[0]
    return before, after, norm.item(), t.bytes, before.numel(), row


def test_monitor_clip_without_a_limit_leaves_the_gradients(tmp_path):
    """The trainer passes max_norm=inf when clipping is off: the norm is measured, nothing is multiplied (torch's
    function would multiply by 1, and by NaN once the norm is not finite)."""
    before, after, norm, moved, n, row = clip_once(tmp_path, float("inf"))
    assert torch.equal(before, after) and norm == pytest.approx(before.norm().item(), rel=1e-5)
    assert row["grad_norm_clipped"] == pytest.approx(row["grad_norm"])
    *_, moved_limited, _, _ = clip_once(tmp_path, 1e9)  # a limit never reached: the multiply by 1 happens
    assert moved_limited - moved > 1.5 * 4 * n  # its read and write of every gradient
