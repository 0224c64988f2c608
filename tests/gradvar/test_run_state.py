"""The run's host state: tokens so far, the labels of events and other tables' rows, and the spike detector and
best probe loss, carried through a checkpoint in the format the monitor has always written."""

from __future__ import annotations

import math

import torch

import gradvar
from gradvar.run_state import SEQLEN_MEMORY, RunState
from gradvar.spikes import OnlineSpikeDetector, SpikeRule


def test_events_and_rows_carry_the_labels_of_their_step():
    run = RunState(SpikeRule())
    run.advance(64)
    run.remember(1, 64, 16)
    run.advance(160)
    run.remember(2, 160, 32)
    run.add_row("evals", 2, {"loss": 1.5})
    run.add_event(1, "checkpoint", "saved", 1.0)  # a step already flushed: its own tokens and seqlen
    run.add_event(7, "note", "later")  # a step not flushed yet: the latest values
    waiting = run.take_waiting()
    assert [t for t, _ in waiting] == ["events", "events", "evals"]  # events first, as the writer expects
    (_, first), (_, late), (_, row) = waiting
    assert (first["step"], first["tokens"], first["seqlen"], first["value"]) == (1, 64, 16.0, 1.0)
    assert (late["step"], late["tokens"], late["seqlen"]) == (7, 160, 32.0) and math.isnan(late["value"])
    assert row == {"step": 2, "tokens": 160, "seqlen": 32, "loss": 1.5}
    assert run.take_waiting() == []  # taken once


def test_the_seqlen_memory_is_bounded():
    run = RunState(SpikeRule())
    for s in range(1, 2 * SEQLEN_MEMORY + 2):
        run.remember(s, 10 * s, s % 7)
    assert run.labels(2 * SEQLEN_MEMORY + 1) == (10 * (2 * SEQLEN_MEMORY + 1), (2 * SEQLEN_MEMORY + 1) % 7)
    assert run.labels(1) == (run.tokens, run.last_seqlen)  # forgotten: the latest values


def test_a_reloaded_state_continues_the_detector_the_probe_ratio_and_the_tokens():
    losses = [3.0 + 0.01 * math.sin(i) for i in range(40)] + [9.0, 3.0]
    whole, first = RunState(SpikeRule()), RunState(SpikeRule())
    reference = OnlineSpikeDetector(SpikeRule())
    for v in losses[:30]:
        assert same(whole.spike(v)) == same(first.spike(v)) == same(reference.update(v))
    for v in (2.0, 2.5):
        whole.probe_ratio(v), first.probe_ratio(v)
    first.advance(960)
    state = first.state_dict()
    assert set(state) == {"detector", "probe_best", "tokens"}  # the keys older checkpoints hold
    resumed = RunState(SpikeRule())
    resumed.load_state_dict(state)
    assert resumed.tokens == 960
    assert resumed.probe_ratio(3.0) == whole.probe_ratio(3.0) == 1.5
    assert math.isnan(resumed.probe_ratio(math.nan)) and resumed.probe_ratio(math.inf) == math.inf
    verdicts = [same(resumed.spike(v)) for v in losses[30:]]
    assert verdicts == [same(whole.spike(v)) for v in losses[30:]]
    assert verdicts[-2]["new_event"]  # the spike at 9.0 against the history from before the checkpoint


def same(verdict: dict) -> dict:
    """A detector's verdict with NaN as None, so that equal verdicts compare equal."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in verdict.items()}


def test_the_monitor_checkpoint_round_trips_through_torch_save(tmp_path):
    """Monitor.state_dict keeps the run state under "rows" (the key older checkpoints hold), loads with
    weights_only=True (as the HF callback does), and the tokens continue from it or from set_tokens."""
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = gradvar.Monitor(model, opt, tmp_path / "a", "minimal", infer_inputs=False, handle_sigterm=False)
    for step in range(1, 4):
        model(torch.ones(2, 4)).sum().backward()
        opt.step()
        opt.zero_grad()
        mon.step(loss=torch.tensor(2.0 ** (3 - step)), seqlen=4, tokens=8 * step)
    assert mon.tokens == 24
    mon.flush()  # the detector runs at the flush: a checkpoint is taken after one (as the integrations do)
    torch.save(mon.state_dict(), tmp_path / "state.pt")
    mon.close()
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    assert state["step"] == 3 and set(state["rows"]) == {"detector", "probe_best", "tokens"}

    again = gradvar.Monitor(model, opt, tmp_path / "a", "minimal", infer_inputs=False, resume_step=3)
    again.load_state_dict(state)
    assert (again.step_num, again.tokens) == (3, 24)
    model(torch.ones(2, 4)).sum().backward()
    opt.step()
    again.step(loss=torch.tensor(0.5), seqlen=4)  # tokens inferred from the forwards: none seen, so unchanged
    again.log_row("evals", {"loss": 0.25})
    again.set_tokens(100)
    again.log_event("resume", "tokens from the records")
    again.close()
    records = gradvar.read_records(tmp_path / "a")
    assert records["steps"].step.tolist() == [1, 2, 3, 4]
    assert records["steps"].loss_ratio.tolist()[-1] == 0.5  # the best loss came from the checkpoint
    assert records["evals"].tokens.tolist() == [24] and records["events"].kind.tolist()[-1] == "resume"
