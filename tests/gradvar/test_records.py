"""Records: column contract frozen, crash-safe parts, compaction, truncation on resume, corrupt parts."""

import pytest

import gradvar
from gradvar.records import FANOUT, RecordWriter, read_records
from gradvar.schema import EVENTS, LAYERS, PROBES, STEPS

FROZEN_STEPS = (
    "step tokens seqlen batch_size lr loss loss_max loss_ratio spike_ratio spike_z grad_norm grad_trace_sigma "
    "grad_true_sq grad_noise_scale grad_var_max grad_var_sum adam_v_max adam_v_l1 adam_v_min adam_m_norm "
    "update_rms nonfinite_loss nonfinite_grad time_s tokens_per_s"
).split()


def test_column_contract_is_frozen():
    assert list(STEPS) == FROZEN_STEPS
    assert LAYERS == ("step", "tokens", "seqlen", "group", "stat", "value")
    assert PROBES[:4] == ("step", "tokens", "seqlen", "probe_seqlen")
    assert EVENTS == ("step", "tokens", "seqlen", "kind", "value", "message")


def _rows(a, b):
    return [{"step": s, "tokens": 10 * s, "seqlen": 8.0, "loss": 1.0 / s} for s in range(a, b)]


def test_many_flushes_compact_and_read_back(tmp_path):
    w = RecordWriter(tmp_path)
    for i in range(FANOUT * 3 + 5):
        w.append("steps", _rows(i * 4 + 1, i * 4 + 5))
        w.flush()
    parts = list((tmp_path / "records" / "steps").glob("*.parquet"))
    assert len(parts) < FANOUT + 5
    df = read_records(tmp_path)["steps"]
    assert df.step.tolist() == list(range(1, (FANOUT * 3 + 5) * 4 + 1))


def test_truncate_after_resume_step(tmp_path):
    w = RecordWriter(tmp_path)
    w.append("steps", _rows(1, 21))
    w.append("events", [{"step": 15, "tokens": 150, "seqlen": 8.0, "kind": "spike", "value": 1.0, "message": "x"}])
    w.flush()
    w2 = RecordWriter(tmp_path, resume_step=10)
    w2.append("steps", _rows(11, 16))
    w2.flush()
    t = read_records(tmp_path)
    assert t["steps"].step.tolist() == list(range(1, 16))
    assert t["events"].empty


def test_corrupt_part_is_reported_and_other_rows_kept(tmp_path):
    w = RecordWriter(tmp_path)
    w.append("steps", _rows(1, 6))
    w.flush()
    w.append("steps", _rows(6, 11))
    w.flush()
    newest = sorted((tmp_path / "records" / "steps").glob("*.parquet"))[-1]
    newest.write_bytes(newest.read_bytes()[:40])
    errors = []
    with pytest.warns(UserWarning, match="unreadable"):
        df = read_records(tmp_path, errors=errors)["steps"]
    assert df.step.tolist() == [1, 2, 3, 4, 5]
    assert len(errors) == 1 and newest.name in errors[0]


def test_monitor_writes_every_row_with_key_columns(tmp_path):
    import torch

    model = torch.nn.Linear(4, 1)
    opt = torch.optim.AdamW(model.parameters())
    mon = gradvar.Monitor(model, opt, tmp_path, "paper", flush_every=3, infer_inputs=False)
    for i in range(7):
        model(torch.randn(2, 4)).mean().backward()
        opt.step()
        opt.zero_grad()
        mon.step(loss=torch.tensor(float(i + 1)), seqlen=4, tokens=8 * (i + 1))
    mon.close()
    t = read_records(tmp_path)
    assert t["steps"].step.tolist() == list(range(1, 8))
    assert t["steps"].tokens.tolist() == [8 * (i + 1) for i in range(7)]
    for name, df in t.items():
        assert {"step", "tokens", "seqlen"} <= set(df.columns), name
    assert set(FROZEN_STEPS) <= set(t["steps"].columns)


def test_a_loop_that_gives_no_loss_is_told_once(tmp_path):
    import torch

    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = gradvar.Monitor(model, opt, tmp_path, "minimal")
    with pytest.warns(UserWarning, match="no loss") as caught:
        for _ in range(3):
            model(torch.randn(2, 4)).mean().backward()  # a plain module: its output has no .loss
            opt.step()
            opt.zero_grad()
            mon.step()
    mon.close()
    assert len([w for w in caught if "no loss" in str(w.message)]) == 1
    t = read_records(tmp_path)
    assert t["steps"]["loss"].isna().all() and len(t["steps"]) == 3
    assert t["events"].loc[t["events"].kind == "note", "step"].tolist() == [1]
