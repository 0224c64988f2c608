"""The Monitor's contract with the user's objects: copies of a monitored model, options that configure
nothing, the private torch APIs behind one checked module."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from client_loops import batches, check, hf_reference
from gv_helpers import tiny_gpt2

import gradvar
from gradvar import _torch_compat


def test_copies_of_a_monitored_model(tmp_path):
    """deepcopy, torch.optim.swa_utils.AveragedModel (the usual EMA) and torch.save(model) work with a monitor
    attached; the copies are not monitored (their forwards, with gradients on, leave the records as they are)."""
    model = tiny_gpt2()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    mon = gradvar.Monitor(model, opt, tmp_path, "full")
    ema = torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(0.9))
    twin = copy.deepcopy(model)
    refs = []
    for x in batches(2):
        chunks = x.split(4)
        with mon.paused():
            refs.append(hf_reference(model, chunks))
        for c in chunks:
            (model(input_ids=c, labels=c).loss / 2).backward()
        opt.step()
        opt.zero_grad()
        ema.update_parameters(model)
        ema(input_ids=x[:2]).logits.sum()  # a forward of the copy, gradients on: not this step's
        twin(input_ids=x[:2], labels=x[:2]).loss.backward()
        mon.step()
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    assert torch.equal(loaded(input_ids=x[:1]).logits, model(input_ids=x[:1]).logits)
    mon.close()
    check(gradvar.read_records(tmp_path)["steps"], refs, b_s=4, seqlen=17)


def test_options_that_configure_nothing_raise(tmp_path):
    model = tiny_gpt2()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    probe = torch.randint(0, 64, (4, 17))
    with pytest.raises(TypeError, match="configure them there"):
        gradvar.Monitor(model, opt, tmp_path, [gradvar.quantities.Loss()], loss_fn=lambda m, x: 0)
    with pytest.raises(TypeError, match="configure them there"):
        gradvar.Monitor(model, opt, tmp_path, [gradvar.quantities.Loss()], probe_batch=probe)
    with pytest.raises(TypeError, match="needs probe_batch"):
        gradvar.Monitor(model, opt, tmp_path, "paper", probe_loss_every=5)
    with pytest.raises(TypeError, match="only the 'full' preset"):
        gradvar.Monitor(model, opt, tmp_path, "paper", probe_batch=probe, probe_seqlens=[8, 17])
    # the quantities carry their own options
    q = gradvar.quantities.ProbeLoss(probe, gradvar.quantities.every(3))
    mon = gradvar.Monitor(model, opt, tmp_path, [gradvar.quantities.Loss(), q])
    assert mon.quantities[1] is q
    mon.close()


def test_private_torch_apis_are_checked_in_one_place(monkeypatch):
    """A torch without one of them fails at import with the name of what is missing, not inside a hook."""
    _torch_compat._check()  # this torch has them all
    monkeypatch.delattr(torch._C, "_current_graph_task_id")
    with pytest.raises(ImportError, match="torch._C._current_graph_task_id"):
        _torch_compat._check()
    monkeypatch.undo()
    monkeypatch.delattr(torch._C, "_current_autograd_node")  # current_node()
    with pytest.raises(ImportError, match="torch._C._current_autograd_node"):
        _torch_compat._check()
    monkeypatch.undo()
    monkeypatch.setattr(torch.amp.GradScaler, "__init__", lambda self: None)  # no _per_optimizer_states
    with pytest.raises(ImportError, match="_per_optimizer_states"):
        _torch_compat._check()
    monkeypatch.undo()
    _torch_compat.check_dtensor()  # the FSDP2 shard reader, checked when a sharded model is monitored
    monkeypatch.setattr(torch, "__version__", "2.5.1")
    with pytest.raises(ImportError, match="torch >= 2.6"):
        _torch_compat._check()
