"""Gradient-variance quantities against a naive per-micro-batch autograd loop, and the McCandlish
estimators on a synthetic problem whose true tr(Sigma) and |G|^2 are known in closed form."""

import numpy as np
import pytest
import torch
from gv_helpers import accumulate, every_step, micro_grads, tiny_gpt2

import gradvar
from gradvar.quantities import noise_estimates


def reference(g: torch.Tensor, b_s: int) -> dict:
    """g: (K, P) micro-batch gradients of B_s sequences each."""
    k = g.shape[0]
    G = g.mean(0)
    gs, gb = (g.double() ** 2).sum(1).mean().item(), (G.double() ** 2).sum().item()
    var = (g.double() ** 2).mean(0) - G.double() ** 2
    return {
        "grad_true_sq": (k * gb - gs) / (k - 1),
        "grad_trace_sigma": b_s * k * (gs - gb) / (k - 1),
        "grad_var_sum": var.sum().item(),
        "grad_var_max": var.max().item(),
        "grad_norm": gb**0.5,
    }


@pytest.mark.parametrize("k,b_s", [(2, 2), (4, 1), (3, 2)])
def test_monitor_matches_per_microbatch_reference(tmp_path, k, b_s):
    model = tiny_gpt2()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    mon = gradvar.Monitor(model, opt, tmp_path, every_step("paper"), flush_every=100)
    refs = []
    for step in range(3):
        x = torch.randint(0, 64, (k * b_s, 16), generator=torch.Generator().manual_seed(step))
        with mon.paused():
            refs.append(reference(micro_grads(model, x.split(b_s)), b_s))
        accumulate(model, x.split(b_s))
        opt.step()
        opt.zero_grad()
        mon.step()
    mon.close()
    steps = gradvar.read_records(tmp_path)["steps"]
    for i, ref in enumerate(refs):
        for col, want in ref.items():
            assert steps[col][i] == pytest.approx(want, rel=1e-4, abs=1e-9), col
        assert steps["micro_batches"][i] == k
        assert steps["batch_size"][i] == k * b_s


def test_external_clipping_rescaled_by_given_norm(tmp_path):
    """Clip with torch's own function and pass the pre-clip norm: the estimators match the unclipped ones."""
    model = tiny_gpt2()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    x = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(1))
    ref = reference(micro_grads(model, x.split(1)), 1)
    mon = gradvar.Monitor(
        model, opt, tmp_path, [gradvar.quantities.GradNorm(), gradvar.quantities.GradVariance(elementwise=False)]
    )
    accumulate(model, x.split(1))
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1e-3)
    opt.step()
    mon.step(grad_norm=norm)
    mon.close()
    row = gradvar.read_records(tmp_path)["steps"].iloc[0]
    assert row["grad_norm"] == pytest.approx(ref["grad_norm"], rel=1e-5)
    assert row["grad_trace_sigma"] == pytest.approx(ref["grad_trace_sigma"], rel=1e-4)
    assert row["grad_true_sq"] == pytest.approx(ref["grad_true_sq"], rel=1e-4)


def test_monitor_clip_records_before_and_after(tmp_path):
    model = tiny_gpt2()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(2))
    ref = reference(micro_grads(model, x.split(2)), 2)
    mon = gradvar.Monitor(model, opt, tmp_path, "paper")
    accumulate(model, x.split(2))
    returned = mon.clip_grad_norm_(0.05)
    after = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in model.parameters())).item()
    opt.step()
    mon.step()
    mon.close()
    row = gradvar.read_records(tmp_path)["steps"].iloc[0]
    assert returned.item() == pytest.approx(ref["grad_norm"], rel=1e-5)
    assert row["grad_norm"] == pytest.approx(ref["grad_norm"], rel=1e-5)
    assert row["grad_norm_clipped"] == pytest.approx(after, rel=1e-4)
    assert row["grad_trace_sigma"] == pytest.approx(ref["grad_trace_sigma"], rel=1e-4)


def test_single_microbatch_gives_nan_and_says_why_once(tmp_path):
    model = tiny_gpt2()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    mon = gradvar.Monitor(model, opt, tmp_path, "paper")
    x = torch.randint(0, 64, (2, 16))
    with pytest.warns(UserWarning, match="one micro-batch") as caught:
        for chunks in ([x], x.split(1), [x]):
            accumulate(model, chunks)
            opt.step()
            opt.zero_grad()
            mon.step()
    mon.close()
    assert len([w for w in caught if "micro-batch" in str(w.message)]) == 1
    t = gradvar.read_records(tmp_path)
    steps = t["steps"]
    assert np.isnan(steps["grad_trace_sigma"][0]) and np.isnan(steps["grad_var_max"][0])
    assert np.isfinite(steps["grad_trace_sigma"][1]) and np.isnan(steps["grad_trace_sigma"][2])
    assert (steps["grad_norm"] > 0).all()
    notes = t["events"][t["events"].kind == "note"]
    assert notes.step.tolist() == [1] and "grad_trace_sigma" in notes.message.iloc[0]


def test_estimators_recover_closed_form_moments(tmp_path):
    """Per-sample gradient of loss = w.x is x ~ N(mu, diag(s^2)): |G|^2 = |mu|^2, tr(Sigma) = sum s^2."""
    torch.manual_seed(0)
    d, k, b_s, steps = 20, 8, 4, 300
    mu = torch.linspace(-0.5, 0.5, d)
    s = torch.linspace(0.5, 2.0, d)
    model = torch.nn.Linear(d, 1, bias=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    mon = gradvar.Monitor(
        model,
        opt,
        tmp_path,
        [gradvar.quantities.GradNorm(), gradvar.quantities.GradVariance()],
        flush_every=100,
        infer_inputs=False,
    )
    for _ in range(steps):
        for _ in range(k):
            x = mu + s * torch.randn(b_s, d)
            (model(x).mean() / k).backward()
        opt.step()
        opt.zero_grad()
        mon.step(batch_size=k * b_s)
    mon.close()
    df = gradvar.read_records(tmp_path)["steps"]
    assert df["grad_true_sq"].mean() == pytest.approx((mu**2).sum().item(), rel=0.1)
    assert df["grad_trace_sigma"].mean() == pytest.approx((s**2).sum().item(), rel=0.05)


def test_noise_estimates_pure_function():
    est = noise_estimates(np.array([3.0]), np.array([1.0]), np.array([2.0]), np.array([4.0]))
    # |G|^2 = (2*1 - 3)/1 = -1 ; tr = 4*2*(3-1)/1 = 16
    assert est["grad_true_sq"][0] == -1.0 and est["grad_trace_sigma"][0] == 16.0
    assert np.isnan(
        noise_estimates(np.array([3.0]), np.array([1.0]), np.array([1.0]), np.array([4.0]))["grad_true_sq"][0]
    )


@pytest.mark.parametrize("mode", ["autocast", "bf16-params"])
def test_bf16_matches_reference_of_the_same_gradients(tmp_path, mode):
    """bf16 autocast (fp32 parameters, bf16 matmuls) and bf16 parameters (bf16 gradients and Adam state):
    the statistics equal the reference computed in float64 from the same micro-batch gradients."""
    model = tiny_gpt2()
    if mode == "bf16-params":
        model = model.to(torch.bfloat16)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    mon = gradvar.Monitor(model, opt, tmp_path, every_step("paper"))
    ctx = lambda: torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "autocast")  # noqa: E731
    refs = []
    for step in range(2):
        x = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(step))
        with mon.paused(), ctx():
            g = micro_grads(model, x.split(2))
        refs.append(reference(g.double(), 2))
        with ctx():
            accumulate(model, x.split(2))
        opt.step()
        v = [opt.state[p]["exp_avg_sq"].double() for p in model.parameters()]
        refs[-1]["adam_v_max"] = max(t.max().item() for t in v)
        opt.zero_grad()
        mon.step()
    mon.close()
    steps = gradvar.read_records(tmp_path)["steps"]
    tol = 1e-5 if mode == "autocast" else 2e-2  # bf16 .grad holds the sum of two bf16 micro-batch gradients
    for i, ref in enumerate(refs):
        for col, want in ref.items():
            assert steps[col][i] == pytest.approx(want, rel=tol, abs=1e-9), (i, col)


def test_sampled_elementwise_variance_is_nan_between_and_exact_at_its_steps(tmp_path):
    """grad_var_max on its own schedule: NaN at the other steps, the every-step value at its own; every other
    column (grad_var_sum and the McCandlish estimators among them) is the same at every step."""
    runs = {}
    for name, at in (("every", None), ("sampled", gradvar.quantities.every(3))):
        model = tiny_gpt2()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        qs = [gradvar.quantities.GradVariance(elementwise_at=at) if isinstance(q, gradvar.quantities.GradVariance)
              else q for q in gradvar.quantities.build("paper")]  # fmt: skip
        mon = gradvar.Monitor(model, opt, tmp_path / name, qs, notify=lambda *a: None)
        for step in range(5):
            accumulate(model, torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(step)).split(2))
            mon.clip_grad_norm_(1.0)
            opt.step(), mon.step(), opt.zero_grad()
        mon.close()
        runs[name] = gradvar.read_records(tmp_path / name)["steps"].set_index("step")
    every, sampled = runs["every"], runs["sampled"]
    at = [1, 4]
    assert every.grad_var_max.notna().all() and sampled.grad_var_max.notna().tolist() == [s in at for s in range(1, 6)]
    np.testing.assert_allclose(sampled.grad_var_max[at], every.grad_var_max[at], rtol=1e-6)
    cols = ["grad_norm", "grad_var_sum", "grad_trace_sigma", "grad_true_sq", "grad_noise_scale", "adam_v_max"]
    np.testing.assert_allclose(sampled[cols].to_numpy(), every[cols].to_numpy(), rtol=1e-6)
    events = gradvar.read_records(tmp_path / "sampled").get("events")
    assert events is None or not events.message.str.contains("grad_var_max").any()  # docs/records.md says why


def test_paper_measures_the_elementwise_variance_every_20_steps():
    (paper,) = [q for q in gradvar.quantities.build("paper") if isinstance(q, gradvar.quantities.GradVariance)]
    (full,) = [q for q in gradvar.quantities.build("full") if isinstance(q, gradvar.quantities.GradVariance)]
    assert [s for s in range(1, 62) if paper.elementwise_at(s)] == [1, 21, 41, 61]
    assert all(full.elementwise_at(s) for s in range(1, 62))
