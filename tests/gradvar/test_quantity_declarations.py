"""What each quantity declares it writes and requires, held to what it does: the monitor adds a missing
writer, refuses two writers of one name, and keeps a quantity that needs whole parameters out of a sharded run."""

from __future__ import annotations

import pytest
import torch
from client_loops import batches, check, hf_reference
from gv_helpers import tiny_gpt2

import gradvar
from gradvar import quantities as Q

MONITOR_COLUMNS = {
    "step", "tokens", "seqlen", "batch_size", "lr", "time_s", "tokens_per_s", "world_size",
    "loss_ratio", "loss_z", "spike_ratio", "spike_z", "probe_loss_ratio",
}  # fmt: skip
"""Steps columns the monitor writes itself, whatever the quantities."""


class RawNames(Q.Quantity):
    """Writes nothing; keeps the names of the raw statistics every finalize is handed."""

    name = "raw_names"
    reads_state = False

    def __init__(self):
        super().__init__()
        self.seen: set[str] = set()

    def finalize(self, raw, meta, groups):
        self.seen |= set(raw)
        return {}, {}


def run(tmp_path, quantities, n_steps: int = 3, k: int = 2) -> tuple[gradvar.Monitor, list[dict]]:
    """A tiny GPT-2 trained for n_steps of k micro-batches of 4 sequences, clipped through the monitor."""
    model = tiny_gpt2()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    mon = gradvar.Monitor(model, opt, tmp_path, quantities, notify=lambda *a: None)
    refs = []
    for x in batches(n_steps, b=4 * k):
        chunks = x.split(4)
        with mon.paused():
            refs.append(hf_reference(model, chunks))
        for c in chunks:
            (model(input_ids=c, labels=c).loss / k).backward()
        mon.clip_grad_norm_(1.0)
        opt.step()
        opt.zero_grad()
        mon.step()
    mon.close()
    return mon, refs


def test_grad_variance_alone_gets_its_dependency(tmp_path):
    """GradVariance's finalize needs |G|^2 per group, which GradNorm writes: the monitor adds it, and
    grad_trace_sigma is the reference's."""
    mon, refs = run(tmp_path, [Q.GradVariance()])
    assert [type(q) for q in mon.quantities] == [Q.GradVariance, Q.GradNorm]
    steps = gradvar.read_records(tmp_path)["steps"]
    assert steps.grad_trace_sigma.notna().all()
    for r in refs:
        r.pop("loss")  # no Loss quantity ran
    check(steps, refs, b_s=4, seqlen=17)


def test_a_dependency_runs_where_its_requirers_do():
    added = Q.complete([Q.GradVariance(Q.at_steps([3]))])[-1]
    assert isinstance(added, Q.GradNorm) and [s for s in range(1, 8) if added.schedule(s)] == [3]
    given = Q.GradNorm(Q.every(2))
    assert Q.complete([Q.GradVariance(), given])[1] is given  # a writer the caller gave is kept as it is


def test_two_writers_of_one_name_fail_at_construction(tmp_path):
    model = tiny_gpt2()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="the loss and loss quantities both write 'loss"):
        gradvar.Monitor(model, opt, tmp_path, [Q.Loss(), Q.Loss()])

    class ParamNorm(Q.Quantity):  # the natural intermediate name, already UpdateSize's
        name = "param_norm"
        writes = frozenset({"param_sq_group"})

    with pytest.raises(ValueError, match="update_size and param_norm quantities both write 'param_sq_group'"):
        gradvar.Monitor(model, opt, tmp_path, [Q.UpdateSize(), ParamNorm()])


def test_an_unmet_requirement_fails_at_construction(tmp_path):
    class Ratio(Q.Quantity):
        name = "ratio"
        requires = frozenset({"nobody_writes_this"})

    model = tiny_gpt2()
    with pytest.raises(ValueError, match="ratio quantity requires 'nobody_writes_this'"):
        gradvar.Monitor(model, torch.optim.SGD(model.parameters(), lr=0.1), tmp_path, [Ratio()])


def test_the_declarations_match_what_the_quantities_write(tmp_path):
    """Every quantity of the full preset, each run with only what it requires: the raw statistics it returns
    and the columns it fills are the ones it declares, and together they declare every column filled."""
    probe = torch.randint(0, 64, (4, 17), generator=torch.Generator().manual_seed(1))
    full = Q.build("full", probe_batch=probe, probe_every=2, probe_seqlens=[8, 17])
    assert len({q.name for q in full}) == len(full)
    columns, layer_stats = set(), set()
    for i, q in enumerate(full):
        spy = RawNames()
        mon, _ = run(tmp_path / str(i), [q, spy], n_steps=2)
        deps = [d for d in mon.quantities if d is not q and d is not spy]
        records = gradvar.read_records(tmp_path / str(i))
        raw = spy.seen - {"_k_local"}
        assert raw <= q.writes | {n for d in deps for n in d.writes}, (q.name, raw - q.writes)
        steps = records["steps"]
        written = {c for c in steps.columns if steps[c].notna().any()}  # the records hold every schema column
        own = written - MONITOR_COLUMNS - {c for d in deps for c in d.columns}
        assert own <= q.columns, (q.name, own - q.columns)
        stats = set(records["layers"].stat) if "layers" in records else set()
        assert stats <= q.columns | {c for d in deps for c in d.columns}, (q.name, stats)
        columns |= own
        layer_stats |= stats
    declared = {c for q in full for c in q.columns}
    assert declared == columns | layer_stats, declared ^ (columns | layer_stats)


def test_zero_keeps_out_what_it_cannot_compute():
    """Under DeepSpeed ZeRO the quantities with a ZeRO form are swapped for it, one that needs whole parameters
    is left out (the monitor notes it), and one that reads the model's tensors without a ZeRO form is refused:
    ZeRO keeps them in its partitions, and it would read the model's empty or stale ones."""
    from gradvar.integrations.deepspeed import ZeroGradNorm, for_zero

    probe = torch.randint(0, 64, (4, 17))
    qs, dropped = for_zero(Q.build("full", probe_batch=probe), stage=3)
    assert dropped == ["seqlen_probe"] and not any(q.needs_full_params or q.reads_state for q in qs)
    assert any(type(q) is ZeroGradNorm for q in qs)

    class ParamNorm(Q.Quantity):
        name = "param_norm"
        writes = frozenset({"param_norm_sq"})

    with pytest.raises(ValueError, match="param_norm quantity reads parameters, gradients or optimizer state"):
        for_zero([Q.Loss(), ParamNorm()], stage=3)


def fact_reads(source: str) -> set[str]:
    """The step facts a module reads or sets: `<x>.facts.<name>` attributes, loads and stores alike, whatever
    <x> is (a quantity's `ctx`, the monitor's step)."""
    import ast

    return {
        node.attr
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "facts"
    }


def test_every_step_fact_is_a_declared_field():
    """What the monitor hands the quantities per step is a field of StepFacts, declared there with its type: a
    name used anywhere in gradvar and not declared there fails here (an attribute typo would otherwise read
    as an AttributeError only at the step that reaches it)."""
    import dataclasses
    from pathlib import Path

    from gradvar.quantities.base import StepFacts

    root = Path(gradvar.__file__).parent
    used = {k: p.name for p in root.rglob("*.py") for k in fact_reads(p.read_text())}
    assert {"pre_clip", "losses", "snapshot", "k_local", "clip_coef"} <= used.keys()  # the reader sees them
    assert fact_reads("ctx.facts.a; self.facts.b = 1; ctx.facts.c.d(); facts.e") == {"a", "b", "c"}
    fields = {f.name for f in dataclasses.fields(StepFacts)}
    methods = {n for n, v in vars(StepFacts).items() if callable(v) and not n.startswith("_")}
    undeclared = {k: f for k, f in used.items() if k not in fields | methods}
    assert not undeclared, undeclared
