"""gradvar added to training loops as people write them, each steps column checked against the micro-batch
gradients (client_loops.reference): torch's clipping, closures, eval-mode and dict forwards, GradScaler."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from client_loops import DictInput, NanoGPTStyle, batches, check, hf_reference, notes, reference
from gv_helpers import tiny_gpt2

import gradvar

K, CLIP = 4, 0.05  # every step clips: a post-clip read would show


def nanogpt_loop(tmp_path, pass_loss):
    model = NanoGPTStyle()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    mon = gradvar.Monitor(model, opt, tmp_path, "paper", notify=lambda *a: None)
    refs = []
    for x in batches(3):
        chunks = x.split(len(x) // K)
        with mon.paused():
            refs.append(reference(model, [lambda c=c: model(c[:, :-1], c[:, 1:])[1] for c in chunks], CLIP))
        for c in chunks:
            _, loss = model(c[:, :-1], c[:, 1:])
            loss = loss / K  # nanoGPT scales the loss variable itself
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()
        opt.zero_grad(set_to_none=True)
        mon.step(loss=loss) if pass_loss else mon.step()
    mon.close()
    return gradvar.read_records(tmp_path)["steps"], refs


@pytest.mark.parametrize("pass_loss", [False, True], ids=["inferred-loss", "divided-loss-passed"])
def test_nanogpt_loop_with_torch_clipping(tmp_path, pass_loss):
    """K = 4, torch.nn.utils.clip_grad_norm_ before optimizer.step(): the records hold the gradient before
    clipping; the loss comes from the (logits, loss) tuple; the loss variable divided by K, when passed, is
    recognised as such."""
    steps, refs = nanogpt_loop(tmp_path, pass_loss)
    check(steps, refs, b_s=2, seqlen=16)
    assert (steps.grad_norm > CLIP).all()
    said = notes(tmp_path)
    assert any("divided by the number of micro-batches" in m for m in said) == pass_loss


def test_closure_step(tmp_path):
    """optimizer.step(closure): the step's micro-batches run inside the optimizer's step, clipping too."""
    model = tiny_gpt2()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    mon = gradvar.Monitor(model, opt, tmp_path, "paper")
    refs = []
    for x in batches(3):
        chunks = x.split(len(x) // 2)
        with mon.paused():
            refs.append(hf_reference(model, chunks, CLIP))

        def closure(chunks=chunks):
            opt.zero_grad()
            for c in chunks:
                loss = model(input_ids=c, labels=c).loss
                (loss / len(chunks)).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
            return loss

        opt.step(closure)
        mon.step()
    mon.close()
    check(gradvar.read_records(tmp_path)["steps"], refs, b_s=4, seqlen=17)


@pytest.mark.parametrize("form", ["eval-kwargs", "dict-arg"])
def test_eval_mode_and_dict_forwards(tmp_path, form):
    """The batch size is read from what the forward received: keyword tensors in eval mode (gradients on),
    one dict argument."""
    model = tiny_gpt2() if form == "eval-kwargs" else DictInput()
    if form == "eval-kwargs":
        model.eval()

        def call(c):
            batch = {"input_ids": c, "labels": c}  # a collator's dict, as model(**batch)
            return model(**batch).loss
    else:

        def call(c):
            return model({"ids": c, "labels": c}).loss

    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    mon = gradvar.Monitor(model, opt, tmp_path, "paper")
    refs = []
    for x in batches(2):
        chunks = x.split(2)
        with mon.paused():
            refs.append(reference(model, [lambda c=c: call(c) for c in chunks]))
        for c in chunks:
            (call(c) / len(chunks)).backward()
        opt.step()
        opt.zero_grad()
        mon.step()
    mon.close()
    check(gradvar.read_records(tmp_path)["steps"], refs, b_s=2, seqlen=17)


@pytest.mark.parametrize("passed", [True, False], ids=["scaler-passed", "scaler-not-passed"])
def test_grad_scaler(tmp_path, passed):
    """torch's AMP recipe with an enabled GradScaler (on the CPU: the scaling path exactly as under fp16):
    scale(loss).backward(), unscale_, torch's clipping, scaler.step, update. Passed or found at
    scaler.step, its scale is divided out; the records equal the true gradients'."""
    model = tiny_gpt2()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    mon = gradvar.Monitor(model, opt, tmp_path, "paper", grad_scaler=scaler if passed else None)
    refs = []
    for x in batches(3):
        chunks = x.split(4)
        with mon.paused():
            refs.append(hf_reference(model, chunks, CLIP))
        for c in chunks:
            scaler.scale(model(input_ids=c, labels=c).loss / len(chunks)).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad()
        mon.step()
    mon.close()
    check(gradvar.read_records(tmp_path)["steps"], refs, b_s=4, seqlen=17)
    assert any("GradScaler that was not passed" in m for m in notes(tmp_path)) == (not passed)


def test_batch_size_from_tokens_or_nan_with_a_note(tmp_path):
    """No forward seen (infer_inputs=False): the sequences follow from tokens and seqlen when passed; without
    them tr(Sigma) is NaN and a note says to pass batch_size= (never a per-micro-batch value)."""
    for given in (True, False):
        model = tiny_gpt2()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        mon = gradvar.Monitor(model, opt, tmp_path / str(given), "paper", infer_inputs=False, notify=lambda *a: None)
        x = batches(1)[0]
        for c in x.split(4):
            (model(input_ids=c, labels=c).loss / 2).backward()
        opt.step()
        mon.step(loss=1.0, **({"tokens": x.numel(), "seqlen": x.shape[1]} if given else {}))
        mon.close()
        row = gradvar.read_records(tmp_path / str(given))["steps"].iloc[0]
        assert (row.batch_size == 8) == given and np.isfinite(row.grad_trace_sigma) == given
        assert np.isfinite(row.grad_true_sq)
        assert any("pass Monitor.step(batch_size=...)" in m for m in notes(tmp_path / str(given))) == (not given)


def test_grad_set_to_none_between_passes(tmp_path):
    """zero_grad() inside the accumulation loop: .grad no longer sums the step's passes; a note, NaN for
    the variance columns, no error inside a hook; the gradient norm is the one the optimizer applies."""
    model = tiny_gpt2()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = gradvar.Monitor(model, opt, tmp_path, "paper", notify=lambda *a: None)
    x = batches(1)[0]
    for c in x.split(4):
        opt.zero_grad(set_to_none=True)
        (model(input_ids=c, labels=c).loss / 2).backward()
    norm = torch.cat([p.grad.reshape(-1) for p in model.parameters()]).norm().item()
    opt.step()
    mon.step()
    mon.close()
    row = gradvar.read_records(tmp_path)["steps"].iloc[0]
    assert math.isnan(row.grad_trace_sigma) and math.isnan(row.grad_true_sq)
    assert row.grad_norm == pytest.approx(norm, rel=1e-5)
    assert any("set to None between two backward passes" in m for m in notes(tmp_path))


def test_backward_after_the_read(tmp_path):
    """A backward between optimizer.step() and Monitor.step(): the gradient columns are NaN with a note."""
    model = tiny_gpt2()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = gradvar.Monitor(model, opt, tmp_path, "paper", notify=lambda *a: None)
    x = batches(1)[0]
    for c in x.split(4):
        (model(input_ids=c, labels=c).loss / 2).backward()
    opt.step()
    model(input_ids=x, labels=x).loss.backward()
    mon.step()
    mon.close()
    row = gradvar.read_records(tmp_path)["steps"].iloc[0]
    assert math.isnan(row.grad_norm) and math.isnan(row.grad_trace_sigma)
    assert any("a backward pass ran after optimizer.step()" in m for m in notes(tmp_path))


class Wrapped:
    """An optimizer wrapper as training libraries write them: the torch optimizer at `.optimizer`, step and
    zero_grad forwarded, no torch.optim.Optimizer machinery of its own."""

    def __init__(self, optimizer):
        self.optimizer = optimizer

    def step(self, closure=None):
        return self.optimizer.step(closure)

    def zero_grad(self, set_to_none=True):
        self.optimizer.zero_grad(set_to_none)


def test_optimizer_wrapper_with_the_optimizer_inside(tmp_path):
    """A wrapper that keeps the torch optimizer at `.optimizer`: hooks on that optimizer, its Adam state read;
    anything else passed as the optimizer is a one-line TypeError."""
    model = tiny_gpt2()
    inner = torch.optim.AdamW(model.parameters(), lr=1e-3)
    opt = Wrapped(inner)
    mon = gradvar.Monitor(model, opt, tmp_path, "paper", notify=lambda *a: None)
    refs = []
    for x in batches(2):
        chunks = x.split(4)
        with mon.paused():
            refs.append(hf_reference(model, chunks, CLIP))
        for c in chunks:
            (model(input_ids=c, labels=c).loss / len(chunks)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()
        opt.zero_grad()
        mon.step()
    mon.close()
    steps = gradvar.read_records(tmp_path)["steps"]
    check(steps, refs, b_s=4, seqlen=17)
    v_max = max(s["exp_avg_sq"].max().item() for s in inner.state.values())
    assert steps.adam_v_max.iloc[-1] == pytest.approx(v_max, rel=1e-6)
    with pytest.raises(TypeError, match="needs a torch.optim.Optimizer, or a wrapper that holds one at .optimizer"):
        gradvar.Monitor(model, object(), tmp_path / "bad")


@pytest.mark.parametrize("order", ["zero_grad-first", "monitor-first"])
def test_grad_scaler_skip_keeps_its_row(tmp_path, order):
    """A step that the GradScaler skips (non-finite gradients) keeps its row, with no Adam state and a note that
    no optimizer step ran; its gradient columns read the gradient when Monitor.step() comes before zero_grad(),
    and are NaN with a note when zero_grad() set it to None first. The steps around it are whole."""
    model = tiny_gpt2()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    mon = gradvar.Monitor(model, opt, tmp_path, "paper", notify=lambda *a: None)
    for i, x in enumerate(batches(3)):
        for c in x.split(4):
            loss = model(input_ids=c, labels=c).loss
            scaler.scale(loss * (math.inf if i == 1 else 1.0) / 2).backward()
        scaler.step(opt)
        scaler.update()
        if order == "monitor-first":
            mon.step()
        opt.zero_grad()
        if order == "zero_grad-first":
            mon.step()
    mon.close()
    steps = gradvar.read_records(tmp_path)["steps"]
    assert steps.step.tolist() == [1, 2, 3] and np.isfinite(steps.loss).all()
    assert steps.adam_v_max.isna().tolist() == [False, True, False]
    said = notes(tmp_path)
    assert [m[:7] for m in said if "no optimizer step ran since" in m] == ["step 2:"]
    if order == "monitor-first":
        assert steps.nonfinite_grad.tolist()[1] > 0 and (steps.micro_batches == 2).all()
    else:
        assert steps.grad_norm.isna().tolist() == steps.nonfinite_grad.isna().tolist() == [False, True, False]
        assert any(m.startswith("step 2: no optimizer step ran and .grad was set to None") for m in said)


def test_loop_that_starts_clipping_with_torch_loses_one_step_then_reads_every_pass(tmp_path):
    """The monitor reads .grad once per step, when it needs it, as long as the loop leaves .grad alone until then
    (Monitor.clip_grad_norm_ here at steps 1-2). A loop that then clips with torch's function changes .grad
    before the read: that step's pre-clip columns are NaN with a note, never the clipped gradient's; from the
    next step on every pass is read as it ends, and the records are exact again."""
    model = tiny_gpt2()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    mon = gradvar.Monitor(model, opt, tmp_path, "paper", notify=lambda *a: None)
    refs, eager = [], []
    for step, x in enumerate(batches(5), start=1):
        chunks = x.split(len(x) // K)
        with mon.paused():
            refs.append(hf_reference(model, chunks, CLIP))
        eager.append(mon.capture.eager)
        for c in chunks:
            (model(input_ids=c, labels=c).loss / K).backward()
        if step <= 2:
            mon.clip_grad_norm_(CLIP)
        else:
            torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()
        mon.step()
        opt.zero_grad(set_to_none=True)
    mon.close()
    steps = gradvar.read_records(tmp_path)["steps"]
    assert eager == [True, False, False, True, True]  # the run's first step, and after the loop was seen clipping
    lost = steps.step == 3
    pre_clip = ["grad_norm", "grad_norm_clipped", "grad_true_sq", "grad_trace_sigma", "grad_noise_scale"]
    pre_clip.append("nonfinite_grad")
    assert steps.loc[lost, pre_clip].isna().all(axis=None) and steps.loc[~lost, pre_clip].notna().all(axis=None)
    assert steps.loc[lost, "grad_sq_micro"].notna().all()  # the micro-batch norms are the hooks' own reads
    check(steps[~lost].reset_index(drop=True).assign(step=[1, 2, 3, 4]), [r for i, r in enumerate(refs) if i != 2],
          b_s=2, seqlen=None)  # fmt: skip
    (said,) = [m for m in notes(tmp_path) if "had not read the last backward pass" in m]
    assert said.startswith("step 3:")
