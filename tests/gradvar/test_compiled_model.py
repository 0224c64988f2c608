"""A torch.compile'd model records what the eager model records: the micro-batch hooks sit on the parameters'
gradient accumulators, outside the compiled graphs, and the forward hooks on the compiled wrapper.

The backend is aot_eager: TorchDynamo and AOTAutograd build the same forward and backward graphs as inductor
does, and those graphs are what the hooks must see through; inductor's generated kernels change only
the arithmetic inside them (and take a minute of C++ compilation on a 2-core machine)."""

import numpy as np
import pytest
import torch
from gv_helpers import every_step, tiny_gpt2

import gradvar

COLS = [
    "loss",
    "grad_norm",
    "grad_norm_clipped",
    "grad_trace_sigma",
    "grad_true_sq",
    "grad_var_max",
    "adam_v_max",
    "adam_v_l1",
    "micro_batches",
    "tokens",
    "seqlen",
    "batch_size",
]


def run(tmp_path, compiled: bool):
    model = tiny_gpt2()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    m = torch.compile(model, backend="aot_eager") if compiled else model
    mon = gradvar.Monitor(m, opt, tmp_path / str(compiled), every_step("paper"))
    x = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(0))
    for _ in range(3):
        for chunk in x.split(2):
            (m(input_ids=chunk, labels=chunk).loss / 2).backward()
        mon.clip_grad_norm_(0.5)
        opt.step()
        opt.zero_grad()
        mon.step()
    mon.close()
    return gradvar.read_records(tmp_path / str(compiled))


@pytest.mark.slow
def test_compiled_model_records_what_eager_records(tmp_path):
    torch._dynamo.reset()
    eager, compiled = run(tmp_path, False), run(tmp_path, True)
    assert (compiled["steps"].micro_batches == 2).all()
    assert np.isfinite(compiled["steps"][COLS].to_numpy()).all()
    for col in COLS:
        assert np.allclose(compiled["steps"][col], eager["steps"][col], rtol=1e-4), col
    groups = lambda t: sorted(set(t["layers"].group))  # noqa: E731  (the _orig_mod. prefix is stripped)
    assert groups(compiled) == groups(eager)
