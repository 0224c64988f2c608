"""gradvar's Lightning callback: automatic optimization (accumulation, Lightning's clipping inside the closure
it passes to optimizer.step) and manual optimization, each column against the micro-batch gradients; training
identical with and without the callback."""
from __future__ import annotations

import pytest
import torch

import gradvar
from client_loops import check
from gradvar.integrations.lightning import GradvarCallback
from lightning_loops import ACCUM, B, CLIP, T, Data, Module, Reference, fit


@pytest.mark.parametrize("manual", [False, True], ids=["automatic", "manual"])
def test_lightning_columns_and_unchanged_training(tmp_path, manual):
    ref = Reference(Data())
    monitored = Module(manual)
    fit(monitored, [ref, GradvarCallback(tmp_path / "gv")], tmp_path / "a", manual)
    bare = Module(manual)
    fit(bare, [], tmp_path / "b", manual)
    for p, q in zip(monitored.parameters(), bare.parameters()):
        assert torch.equal(p, q), "the callback changed training"
    steps = gradvar.read_records(tmp_path / "gv")["steps"]
    check(steps, ref.refs, b_s=B, seqlen=T)
    assert (steps.micro_batches == ACCUM).all() and (steps.grad_norm > CLIP).all()
    assert (steps.grad_norm_clipped <= CLIP + 1e-6).all()
