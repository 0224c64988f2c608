"""max_output_logit on its own schedule: the forwards of the steps it skips are not read, the others are exact."""

from __future__ import annotations

import math

import torch
from gv_helpers import tiny_gpt2

import gradvar
from gradvar.quantities import OutputLogit, every


def test_output_logit_reads_only_its_steps(tmp_path, monkeypatch):
    model = tiny_gpt2()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-2)
    reads = []
    real = gradvar.quantities.logits.abs_max
    monkeypatch.setattr(gradvar.quantities.logits, "abs_max", lambda x: reads.append(1) or real(x))
    mon = gradvar.Monitor(model, opt, tmp_path, [gradvar.quantities.Loss(), OutputLogit(every(2))])
    want = []
    for step in range(1, 6):
        top = 0.0
        for chunk in torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(step)).split(2):
            out = model(input_ids=chunk, labels=chunk)
            top = max(top, out.logits.detach().abs().max().item())
            (out.loss / 2).backward()
        opt.step()
        opt.zero_grad()
        want.append(top if step % 2 == 1 else math.nan)
        mon.step()
    mon.close()
    got = gradvar.read_records(tmp_path)["steps"].max_output_logit.tolist()
    assert len(reads) == 3 * 2  # steps 1, 3, 5: two micro-batches each; steps 2 and 4 not read at all
    assert [math.isnan(g) for g in got] == [math.isnan(w) for w in want]
    assert all(g == w for g, w in zip(got, want) if not math.isnan(w))
