"""Property tests: random and malformed CSV / JSONL / tables through load_log + diagnose.

The contract: bad input raises LogError (one line naming the file) and nothing else ever escapes.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analysis.diagnosis import diagnose
from analysis.logs import LogError, load_log

FAST = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RUN_CLASSES = {"stable", "spiky", "diverged"}

tokens = st.sampled_from(
    [
        "step",
        "loss",
        "Loss",
        "grad_norm",
        "lr",
        "iter",
        "nan",
        "NaN",
        "inf",
        "-inf",
        "",
        " ",
        "1",
        "2",
        "0",
        "-1",
        "1e309",
        "1.5",
        "0.001",
        "abc",
        '"',
        "'",
        "#",
        "null",
        "True",
    ]
)
cell = st.one_of(
    tokens,
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(10**20), 10**20).map(str),
    st.text(max_size=4),
)


def run(name: str, data) -> None:
    """load_log + diagnose on a file holding `data`; only LogError may escape, and it must be one line."""
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / name
        if isinstance(data, bytes):
            p.write_bytes(data)
        else:
            p.write_text(data, encoding="utf-8", errors="surrogatepass")
        try:
            d = diagnose(load_log(p))
        except LogError as exc:
            msg = str(exc)
            assert "\n" not in msg and name in msg, msg
            return
        assert d.run_class in RUN_CLASSES
        assert isinstance(d.summary, str) and all(isinstance(a, str) for a in d.advice)


@FAST
@given(st.text(alphabet=st.sampled_from(list("steploss,;\t\n 0123456789.-+eEnaifNI#\"'{}[]:")), max_size=300))
def test_random_text_as_csv(text):
    run("random.csv", text)


@FAST
@given(
    st.lists(st.lists(cell, min_size=0, max_size=5), min_size=0, max_size=30), st.sampled_from([",", "\t", ";", " "])
)
def test_malformed_tables(rows, sep):
    text = "\n".join(sep.join(r) for r in rows)
    run("table.csv", text)


@FAST
@given(
    st.lists(st.tuples(st.integers(0, 10**6), st.floats(allow_nan=True, allow_infinity=True)), max_size=60),
    st.booleans(),
)
def test_structured_csv_with_random_numbers(rows, shuffle):
    rows = sorted(rows, reverse=shuffle)  # out-of-order and duplicated steps happen here
    text = "step,loss,grad_norm\n" + "\n".join(f"{s},{x!r},{abs(x) if math.isfinite(x) else 1.0}" for s, x in rows)
    run("numbers.csv", text)


json_value = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["loss", "x", "train"]), inner, max_size=3)
    ),
    max_leaves=8,
)
json_keys = st.sampled_from(["step", "loss", "lr", "grad_norm", "eval_loss", "global_step", "Loss", "x"])
json_row = st.dictionaries(json_keys, json_value, max_size=5)


@FAST
@given(st.lists(st.one_of(json_row.map(json.dumps), st.text(max_size=10)), max_size=30), st.booleans())
def test_random_jsonl(lines, trailing_newline):
    run("log.jsonl", "\n".join(lines) + ("\n" if trailing_newline else ""))


@FAST
@given(st.lists(json_row, max_size=20))
def test_random_trainer_state(history):
    run("trainer_state.json", json.dumps({"log_history": history, "train_batch_size": 2}))


@FAST
@given(st.binary(max_size=200))
def test_random_bytes(data):
    run("events.out.tfevents.1.host" if data[:1] == b"\x00" else "blob.log", data)


finite_or_not = st.floats(min_value=-1e300, max_value=1e300) | st.sampled_from([math.nan, math.inf, 0.0, 1e-300])


@FAST
@given(
    st.lists(finite_or_not, min_size=1, max_size=120),
    st.integers(1, 100),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=120, max_size=120),
)
def test_valid_tables_always_diagnose(losses, interval, signal):
    """Any table with good steps and at least one finite loss is diagnosed; events stay inside the log."""
    n = len(losses)
    df = pd.DataFrame({"step": np.arange(1, n + 1) * interval, "loss": losses, "grad_norm": signal[:n]})
    if not np.isfinite(df["loss"]).any():
        return
    d = diagnose(df)
    assert d.run_class in RUN_CLASSES
    if len(d.spikes):
        assert d.spikes["start_step"].min() >= interval and d.spikes["end_step"].max() <= n * interval
        assert (d.spikes["start_step"] <= d.spikes["end_step"]).all()
    assert set(d.signals["role"]) <= {"measured", "schedule"}
