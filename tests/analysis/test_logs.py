"""analysis.logs: every input format, the real HF logs, and a one-line LogError for every bad input."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.logs import LogError, canonical_names, from_frame, load_log

REAL = Path(__file__).resolve().parents[1] / "data" / "real_logs"


def real(name: str) -> Path:
    hits = sorted(REAL.glob(f"*{name}*trainer_state.json"))
    if not hits:
        pytest.skip(f"real logs not found under {REAL}")
    return hits[0]


def write(tmp_path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# --- formats ----------------------------------------------------------------------------------------------------


def test_csv_aliases_are_canonical_case_insensitive(tmp_path):
    p = write(
        tmp_path,
        "m.csv",
        "Iteration,Train/Loss,Learning Rate,gnorm,Seq_Len,Tokens Seen\n"
        "1,3.0,0.001,1.5,128,1000\n2,2.9,0.002,1.4,128,2000\n",
    )
    log = load_log(p)
    assert log.fmt == "csv" and log.source == str(p)
    assert list(log.df.columns) == ["step", "loss", "lr", "grad_norm", "seqlen", "tokens_seen"]
    assert log.df["step"].dtype == np.int64 and log.df["loss"].tolist() == [3.0, 2.9]


def test_alias_priority_keeps_the_other_column():
    names = ["train_loss", "Loss", "global_step", "step"]
    assert canonical_names(names) == ["train_loss", "loss", "global_step", "step"]
    assert canonical_names(["a b", "a-b", ""]) == ["a_b", "a_b_2", "col3"]


def test_nan_and_inf_losses_are_kept_not_errors(tmp_path):
    p = write(tmp_path, "div.csv", "step,loss\n1,2.0\n2,NaN\n3,inf\n4,-Infinity\n5,1.5\n")
    loss = load_log(p).df["loss"].to_numpy()
    assert loss[0] == 2.0 and math.isnan(loss[1]) and loss[2] == math.inf and loss[3] == -math.inf


def test_rows_without_loss_are_eval_rows(tmp_path):
    # PyTorch Lightning's CSVLogger interleaves validation rows (empty train_loss) at the same steps.
    p = write(tmp_path, "metrics.csv", "epoch,step,train_loss,val_loss\n0,10,2.0,\n0,20,1.9,\n0,20,,1.95\n1,30,1.8,\n")
    log = load_log(p)
    assert log.df["step"].tolist() == [10, 20, 30]
    assert log.eval_df["step"].tolist() == [20] and log.eval_df["val_loss"].tolist() == [1.95]


def test_tsv_semicolon_and_headerless_whitespace(tmp_path):
    assert load_log(write(tmp_path, "a.tsv", "step\tloss\n1\t2\n2\t1\n")).df["loss"].tolist() == [2, 1]
    assert load_log(write(tmp_path, "b.csv", "step;loss\n1;2\n2;1\n")).df["step"].tolist() == [1, 2]
    golden = load_log(write(tmp_path, "golden.txt", "# step loss\n1 10.9\n2 10.1\n3 9.5\n"))
    assert golden.df["loss"].tolist() == [10.9, 10.1, 9.5] and any("no header" in n for n in golden.notes)


def test_text_columns_are_dropped_with_a_note(tmp_path):
    log = load_log(write(tmp_path, "t.csv", "step,loss,phase\n1,2,warmup\n2,1,main\n"))
    assert "phase" not in log.df and any("phase" in n for n in log.notes)


def test_jsonl_nested_nan_and_cut_off_last_line(tmp_path):
    text = (
        '{"step": 1, "train": {"loss": 2.5}, "lr": 0.1}\n'
        '{"step": 2, "train": {"loss": NaN}, "lr": 0.1}\n'
        '{"step": 3, "eval_loss": 2.0}\n'
        '{"step": 4, "train": {"lo'
    )
    log = load_log(write(tmp_path, "log.jsonl", text))
    assert log.fmt == "jsonl" and log.df["step"].tolist() == [1, 2] and math.isnan(log.df["loss"][1])
    assert log.eval_df["eval_loss"].tolist() == [2.0]
    assert any("cut off" in n for n in log.notes)


def test_json_list_of_records(tmp_path):
    p = write(tmp_path, "h.json", json.dumps([{"iter": 1, "loss": 3}, {"iter": 2, "loss": 2}]))
    assert load_log(p).df["step"].tolist() == [1, 2]


def test_hf_trainer_state_and_checkpoint_folder(tmp_path):
    def state(n):
        hist = [
            {"step": s, "loss": 3.0 / s, "learning_rate": 1e-4, "grad_norm": 1.0, "epoch": s / 10}
            for s in range(1, n + 1)
        ]
        hist += [{"step": n, "eval_loss": 1.0, "eval_runtime": 2.0}, {"step": n, "train_loss": 2.0, "train_runtime": 9}]
        return {"log_history": hist, "train_batch_size": 4, "logging_steps": 1}

    for n in (10, 20, 5):
        (tmp_path / f"checkpoint-{n}").mkdir()
        (tmp_path / f"checkpoint-{n}" / "trainer_state.json").write_text(json.dumps(state(n)))
    log = load_log(tmp_path)  # the HF output_dir: newest checkpoint by number, not by name
    assert log.fmt == "hf_trainer_state" and len(log.df) == 20
    assert {"lr", "grad_norm", "epoch"} <= set(log.df.columns) and "train_loss" not in log.df
    assert log.eval_df["eval_loss"].tolist() == [1.0] and log.meta["train_batch_size"] == 4


def test_gradvar_run_directory(tmp_path):
    from gradvar.records import RecordWriter

    w = RecordWriter(tmp_path / "run")
    w.append(
        "steps",
        [
            {
                "step": s,
                "tokens": 64 * s,
                "seqlen": 64,
                "loss": 5.0 - 0.1 * s,
                "grad_norm": 1.0,
                "adam_v_max": 1e-4 * s,
                "spike_ratio": False,
            }
            for s in range(1, 11)
        ],
    )
    w.append("evals", [{"step": 10, "tokens": 640, "seqlen": 64, "val_loss": 4.1, "val_ppl": 60.3}])
    w.flush()
    log = load_log(tmp_path / "run")
    assert log.fmt == "gradvar" and log.df["step"].tolist() == list(range(1, 11))
    assert "adam_v_max" in log.df and log.eval_df["eval_loss"].tolist() == [4.1]
    assert load_log(tmp_path / "run" / "records").fmt == "gradvar"


def test_tensorboard_written_by_summarywriter(tmp_path):
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(str(tmp_path / "tb"))
    for s in range(1, 21):
        w.add_scalar("train/loss", float("nan") if s == 15 else 3.0 - 0.05 * s, s)
        w.add_scalar("train/grad_norm", 1.0 + 0.01 * s, s, new_style=True)  # a tensor-valued scalar, as TF2 writes
        w.add_scalar("train/learning_rate", 1e-3, s)
        if s % 10 == 0:
            w.add_scalar("eval/loss", 2.5, s)
    w.close()
    log = load_log(tmp_path / "tb")
    assert log.fmt == "tensorboard" and log.df["step"].tolist() == list(range(1, 21))
    assert {"loss", "grad_norm", "lr"} <= set(log.df.columns)
    assert math.isnan(log.df.loc[log.df["step"] == 15, "loss"].item())
    assert log.df["loss"].iloc[0] == pytest.approx(2.95) and log.df["grad_norm"].iloc[-1] == pytest.approx(1.2)
    assert log.eval_df["step"].tolist() == [10, 20]
    files = list((tmp_path / "tb").glob("*tfevents*"))
    assert load_log(files[0]).df.shape[0] == 20  # a single event file works too


# --- the hand-written TensorBoard reader on hand-built records ----------------------------------------------------


def crc32c(data: bytes) -> int:
    """Bitwise reference CRC-32C (Castagnoli), independent of the module's table version."""
    c = 0xFFFFFFFF
    for b in data:
        c ^= b
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    return c ^ 0xFFFFFFFF


def masked(data: bytes) -> int:
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def field(num: int, wire: int, payload) -> bytes:
    key = varint(num << 3 | wire)
    if wire == 2:
        return key + varint(len(payload)) + payload
    return key + payload


def event(step: int, values: list) -> bytes:
    summary = b"".join(field(1, 2, v) for v in values)
    return field(1, 1, struct.pack("<d", 1.7e9)) + field(2, 0, varint(step)) + field(5, 2, summary)


def record(data: bytes) -> bytes:
    head = struct.pack("<Q", len(data))
    return head + struct.pack("<I", masked(head)) + data + struct.pack("<I", masked(data))


def test_crc32c_reference_vector():
    assert crc32c(b"123456789") == 0xE3069283


def test_hand_built_event_file(tmp_path):
    simple = lambda tag, x: field(1, 2, tag.encode()) + field(2, 5, struct.pack("<f", x))  # noqa: E731
    packed = field(1, 2, b"loss") + field(8, 2, field(1, 0, varint(1)) + field(5, 2, struct.pack("<f", 2.0)))
    content = field(1, 2, b"loss") + field(8, 2, field(1, 0, varint(2)) + field(4, 2, struct.pack("<d", 1.5)))
    histo = field(1, 2, b"weights") + field(5, 2, b"\x09" + struct.pack("<d", 0.0))  # not a scalar: skipped
    data = record(field(3, 2, b"brain.Event:2"))  # the file_version event every file starts with
    data += record(event(1, [simple("loss", 3.0), simple("lr", 0.1), histo]))
    data += record(event(2, [packed]))
    data += record(event(3, [content, simple("grad_norm", 0.5)]))
    data += record(event(4, [simple("loss", 1.0)]))[:-7]  # cut off mid-record, as a killed run leaves it
    p = tmp_path / "events.out.tfevents.123.host"
    p.write_bytes(data)
    log = load_log(p)
    assert log.df["step"].tolist() == [1, 2, 3] and log.df["loss"].tolist() == [3.0, 2.0, 1.5]
    assert log.df["grad_norm"].iloc[2] == 0.5 and "weights" not in log.df
    assert any("cut off" in n for n in log.notes)
    renamed = tmp_path / "mystery.bin"  # sniffed by its valid record header, not by its name
    renamed.write_bytes(data)
    assert load_log(renamed).fmt == "tensorboard"


# --- real logs ------------------------------------------------------------------------------------------------


def test_real_hf_logs_load():
    geo = load_log(real("GeoLLM"))
    assert len(geo.df) == 300 and geo.interval == 10 and "grad_norm" not in geo.df
    kg = load_log(real("KG-LLM"))  # bare NaN tokens; the final summary row (train_loss) is not a step
    assert len(kg.df) == 120 and np.isnan(kg.df["grad_norm"]).sum() == 3
    tiny = load_log(real("tinyLlama"))
    assert len(tiny.df) == 186 and len(tiny.eval_df) == 14 and "eval_loss" in tiny.eval_df
    whisper = load_log(real("whisper"))
    assert len(whisper.df) == 150 and "eval_wer" in whisper.eval_df and whisper.interval == 100
    assert len(load_log(real("kevin")).df) == 100


# --- bad input: one LogError line that names the file -----------------------------------------------------------

BAD = [
    ("empty.csv", "", "empty file"),
    ("blank.csv", "  \n\n ", "empty file"),
    ("nostep.csv", "loss\n1\n2\n", "no step column (columns found: loss"),
    ("noloss.csv", "step,acc,Grad Norm\n1,0.5,1\n", "no loss column (columns found: step, acc, Grad Norm)"),
    ("badstep.csv", "step,loss\n1,2\nabc,3\n", "non-numeric step 'abc' at line 3"),
    ("missingstep.csv", "step,loss\n1,2\n,3\n", "missing step"),
    ("fracstep.csv", "step,loss\n1,2\n1.5,3\n", "not a whole number"),
    ("badloss.csv", "step,loss\n1,2\n2,oops\n", "non-numeric loss 'oops' at line 3"),
    ("dup.csv", "step,loss\n1,2\n2,3\n2,4\n", "step 2 is duplicated"),
    ("order.csv", "step,loss\n5,2\n3,3\n", "steps out of order: step 3 at line 3 comes after step 5"),
    ("emptyloss.csv", "step,loss\n1,\n2,\n", "the loss column is empty"),
    ("header.csv", "step,loss\n", "no data rows"),
    ("wide.csv", "step,loss\n1,2,3\n", "line 2 has 3 fields"),
    ("bad.jsonl", '{"step": 1, "loss": 2}\n{oops\n{"step": 2, "loss": 1}\n', "line 2 is not valid JSON"),
    ("list.jsonl", '{"step": 1, "loss": 2}\n[1, 2]\n', "line 2 is not a JSON object"),
    ("scalar.json", "42\n", "unknown format"),
    ("config.json", '{\n "lr": 1,\n "model": "x"\n}\n', "unknown format"),
    ("trainer_state.json", '{"log_history": []}', "empty log_history"),
    ("nolossrows.json", '{"log_history": [{"step": 1, "eval_loss": 2}]}', "no training rows"),
]


@pytest.mark.parametrize("name,text,expected", BAD, ids=[b[0] for b in BAD])
def test_bad_input_raises_one_line_log_error(tmp_path, name, text, expected):
    p = write(tmp_path, name, text)
    with pytest.raises(LogError) as err:
        load_log(p)
    msg = str(err.value)
    assert isinstance(err.value, ValueError) and "\n" not in msg
    assert name in msg and expected in msg, msg


def test_missing_binary_and_empty_folder(tmp_path):
    cases = [tmp_path / "nope.csv", tmp_path / "blob.bin", tmp_path / "emptydir"]
    cases[1].write_bytes(bytes(range(256)) * 4)
    cases[2].mkdir()
    expected = ["no such file", "unknown format", "unknown format"]
    for p, e in zip(cases, expected):
        with pytest.raises(LogError, match=e) as err:
            load_log(p)
        assert p.name in str(err.value) and "\n" not in str(err.value)


def test_from_frame_validates_like_a_file():
    log = from_frame(pd.DataFrame({"Step": [1, 2], "Loss": [2.0, np.nan], "GNorm": [1.0, 2.0]}))
    assert list(log.df.columns) == ["step", "loss", "grad_norm"]
    with pytest.raises(LogError, match="<DataFrame>: step 1 is duplicated"):
        from_frame(pd.DataFrame({"step": [1, 1], "loss": [1.0, 2.0]}))
