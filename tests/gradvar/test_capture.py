"""GradCapture finds the micro-batch boundaries in the backward passes themselves: one pass per backward,
whatever reaches the parameters (part of them, the same one twice, a backward nested in another by
reentrant activation checkpointing, torch.autograd.grad calls in between)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gv_helpers import accumulate, tiny_gpt2
from torch.utils.checkpoint import checkpoint

import gradvar

COLS = ("micro_batches", "grad_norm", "grad_sq_micro", "grad_var_max", "grad_trace_sigma", "grad_true_sq")


def one_step(model, tmp_path, step_fn, quantities="paper") -> dict:
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    mon = gradvar.Monitor(model, opt, tmp_path, quantities, infer_inputs=False)
    step_fn(model)
    opt.step()
    mon.step(loss=torch.tensor(1.0), batch_size=4)
    mon.close()
    row = gradvar.read_records(tmp_path)["steps"].iloc[0]
    return {c: float(row[c]) for c in COLS}


@pytest.mark.parametrize("reentrant", [True, False], ids=["reentrant", "non-reentrant"])
def test_activation_checkpointing_counts_one_pass_per_backward(tmp_path, reentrant):
    x = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(0))
    step = lambda m: accumulate(m, x.split(2))  # noqa: E731
    plain = one_step(tiny_gpt2().train(), tmp_path / "plain", step)
    model = tiny_gpt2()
    kwargs = {"use_reentrant": reentrant}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    got = one_step(model.train(), tmp_path / "ckpt", step)
    assert got["micro_batches"] == 2
    assert got == pytest.approx(plain, rel=1e-5)


class SharedInsideAndOutside(torch.nn.Module):
    """One layer used inside a reentrant checkpoint and again outside it: its gradient of one micro-batch
    arrives in two backward tasks and must be summed before it is squared."""

    def __init__(self, use_checkpoint: bool):
        super().__init__()
        torch.manual_seed(0)
        self.lin, self.use_checkpoint = torch.nn.Linear(5, 5), use_checkpoint

    def forward(self, x):
        inner = lambda t: self.lin(t).tanh()  # noqa: E731
        y = checkpoint(inner, x, use_reentrant=True) if self.use_checkpoint else inner(x)
        return self.lin(y).square().mean()


def test_parameter_reached_twice_in_one_pass(tmp_path):
    xs = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(1), requires_grad=True)

    def step(m):
        for x in xs:
            (m(x) / 2).backward()

    qs = lambda: [gradvar.quantities.GradNorm(), gradvar.quantities.GradVariance()]  # noqa: E731
    plain = one_step(SharedInsideAndOutside(False), tmp_path / "plain", step, qs())
    got = one_step(SharedInsideAndOutside(True), tmp_path / "ckpt", step, qs())
    assert got["micro_batches"] == 2
    assert got == pytest.approx(plain, rel=1e-5)


class TwoBranches(torch.nn.Module):
    """A model whose first micro-batch reaches only branch `a`: the lazy first pass then covers part of the
    parameters, and the second pass reaches them all but `unused`, which never gets a gradient."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b, self.unused = torch.nn.Linear(6, 3), torch.nn.Linear(6, 3), torch.nn.Linear(6, 5)

    def forward(self, x, use_b: bool):
        y = self.a(x)
        return (y + self.b(x) if use_b else y).square().mean()


def test_lazy_first_pass_with_part_of_the_parameters(tmp_path):
    model = TwoBranches()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    qs = [gradvar.quantities.GradNorm(), gradvar.quantities.GradVariance()]
    mon = gradvar.Monitor(model, opt, tmp_path, qs, infer_inputs=False)
    xs = torch.randn(2, 5, 6, generator=torch.Generator().manual_seed(1))
    params = list(model.parameters())
    naive = []  # per micro-batch gradient, zeros where the pass does not reach
    for k, use_b in enumerate((False, True)):
        loss = model(xs[k], use_b)
        # the monitor stays active: autograd.grad calls reach its hooks but are no micro-batch
        gs = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
        naive.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(gs, params)]))
        (loss / 2).backward()
    opt.step()
    mon.step(batch_size=2)
    mon.close()
    g = torch.stack(naive).double()  # (K, n_params)
    row = gradvar.read_records(tmp_path)["steps"].iloc[0]
    assert model.unused.weight.grad is None
    assert row["micro_batches"] == 2
    assert row["grad_sq_micro"] == pytest.approx((g**2).sum(1).mean().item(), rel=1e-5)
    assert row["grad_norm"] == pytest.approx(g.mean(0).norm().item(), rel=1e-5)
    assert row["grad_var_max"] == pytest.approx(g.var(0, unbiased=False).max().item(), rel=1e-4)
    assert np.isfinite(row["grad_trace_sigma"])


def test_adam_state_of_the_parameters_that_have_it(tmp_path):
    """A parameter that never gets a gradient has no Adam state: the statistics cover the others, over
    steps whose micro-batches reach different subsets."""
    model = TwoBranches()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    mon = gradvar.Monitor(model, opt, tmp_path, "paper", infer_inputs=False)
    xs = torch.randn(3, 5, 6, generator=torch.Generator().manual_seed(2))
    want = []
    for step, use_b in enumerate((False, True, True)):
        (model(xs[step], use_b)).backward()
        opt.step()
        vs = [opt.state[p]["exp_avg_sq"] for p in model.parameters() if p in opt.state]
        want.append(
            {
                "adam_v_max": max(v.max().item() for v in vs),
                "adam_v_min": min(v.min().item() for v in vs),
                "adam_v_mean": torch.cat([v.reshape(-1) for v in vs]).double().mean().item(),
            }
        )
        opt.zero_grad()
        mon.step(loss=torch.tensor(1.0))
    mon.close()
    steps = gradvar.read_records(tmp_path)["steps"]
    assert len(opt.state) == 4  # a and b: weight and bias
    for i, w in enumerate(want):
        for col, value in w.items():
            assert steps[col][i] == pytest.approx(value, rel=1e-5), (i, col)


def plain_and_scaled(tmp_path, micro: int, defer: bool = False, monitor_clips: bool = True):
    """The steps tables of two 2-step loops over the same micro-batches, without and with a GradScaler (S = 2^12).
    monitor_clips: the loop unscales and clips through the monitor (the scaler given); else the scaler's step
    unscales after the monitor's first step. defer: each step starts as after a step that left .grad alone."""
    x = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(5))
    rows = []
    for scaled in (False, True):
        model = tiny_gpt2()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12, enabled=scaled)
        given = scaler if monitor_clips else None
        mon = gradvar.Monitor(model, opt, tmp_path / str(scaled), "paper", grad_scaler=given, notify=lambda *a: None)
        for _ in range(2):
            if defer:
                mon.capture.eager = False
            chunks = x.split(micro)
            for c in chunks:
                scaler.scale(model(input_ids=c, labels=c).loss / len(chunks)).backward()
            if monitor_clips:
                scaler.unscale_(opt)
                mon.clip_grad_norm_(0.5)
            scaler.step(opt)  # unscales .grad (unless done), then steps: the monitor reads after the update
            scaler.update()
            mon.step()
            opt.zero_grad()
        mon.close()
        rows.append(gradvar.read_records(tmp_path / str(scaled))["steps"])
    return rows


@pytest.mark.parametrize("micro", [2, 4], ids=["K2", "K1"])
def test_grad_scaler_losses_give_the_unscaled_statistics(tmp_path, micro):
    """fp16 loops backpropagate a GradScaler's scaled loss: the captured micro-batch gradients are S times
    the true ones until the scaler unscales .grad. Told the scaler, the monitor records what an unscaled
    loop records."""
    plain, scaled = plain_and_scaled(tmp_path, micro)
    cols = ["grad_norm", "grad_norm_clipped", "grad_sq_micro", "adam_v_max", "grad_var_max", "grad_trace_sigma"]
    np.testing.assert_allclose(scaled[cols].to_numpy(), plain[cols].to_numpy(), rtol=1e-4)


def test_a_read_taken_after_the_scaler_unscaled_is_in_true_units(tmp_path):
    """A scaler the monitor adopts after its first step (that step skipped by an inf) meets a .grad it has not
    read yet and that the scaler has unscaled since (its kernel leaves the versions alone): read then, it is
    already in true units, and the records equal an unscaled run's."""
    plain, scaled = plain_and_scaled(tmp_path, 2, defer=True, monitor_clips=False)
    cols = ["grad_norm", "grad_sq_micro", "grad_true_sq", "grad_trace_sigma", "adam_v_max"]
    np.testing.assert_allclose(scaled[cols].to_numpy(), plain[cols].to_numpy(), rtol=1e-4)
