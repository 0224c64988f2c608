"""What the dashboards' own files hold, read with their own readers: TensorBoard event files through
tensorboard's EventAccumulator, a W&B run's .wandb transaction log through wandb's protobuf schema."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path


# ---------------------------------------------------------------- TensorBoard, through its own reader
def tensorboard_scalars(log_dir) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} of every scalar in the event files, read by tensorboard's EventAccumulator."""
    from tensorboard.backend.event_processing import event_accumulator as ea
    from tensorboard.util import tensor_util

    acc = ea.EventAccumulator(str(log_dir), size_guidance={ea.TENSORS: 0, ea.SCALARS: 0})
    acc.Reload()
    out = {}
    for tag in acc.Tags()["tensors"]:
        if acc.SummaryMetadata(tag).plugin_data.plugin_name == "scalars":
            out[tag] = {e.step: float(tensor_util.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)}
    return out


def tensorboard_scalar_events(log_dir) -> list[tuple[int, int]]:
    """(step, number of scalar values) of each event in the event files that holds scalars, in file order."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    out = []
    for path in sorted(Path(log_dir).glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            n = sum(v.metadata.plugin_data.plugin_name == "scalars" for v in event.summary.value)
            if n:
                out.append((event.step, n))
    return out


def tensorboard_texts(log_dir) -> dict[str, dict[int, str]]:
    from tensorboard.backend.event_processing import event_accumulator as ea
    from tensorboard.util import tensor_util

    acc = ea.EventAccumulator(str(log_dir), size_guidance={ea.TENSORS: 0})
    acc.Reload()
    out = {}
    for tag in acc.Tags()["tensors"]:
        if acc.SummaryMetadata(tag).plugin_data.plugin_name == "text":
            name = tag.removesuffix("/text_summary")  # torch's add_text files text under <tag>/text_summary
            out[name] = {e.step: tensor_util.make_ndarray(e.tensor_proto).item().decode() for e in acc.Tensors(tag)}
    return out


# ---------------------------------------------------------------- W&B, through its own transaction-log format
def wandb_records(path, wait_s: float = 60.0):
    """Every protobuf Record (wandb's own schema) of a finished run, once its `exit` record is on disk:
    wandb-core writes the file in its own process, and on a loaded machine `run.finish()` can return before
    the last records reach the file."""
    deadline = time.monotonic() + wait_s
    while True:
        recs = _read_records(path)
        if any(r.WhichOneof("record_type") == "exit" for r in recs) or time.monotonic() > deadline:
            return recs
        time.sleep(0.2)


def _read_records(path):
    """Every protobuf Record (wandb's own schema) in a run's .wandb file: a LevelDB-style log of 32 KiB blocks
    after a 7-byte header (':W&B', magic 0xBEE1, version 0), each chunk crc32c(4) length(2) type(1)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B" and struct.unpack("<H", data[4:6])[0] == 0xBEE1, "not a W&B transaction log"
    pos, block, pending, out = 7, 32768, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a chunk header is padding
            pos += left
            continue
        length, kind = struct.unpack("<HB", data[pos + 4 : pos + 7])
        if pos + 7 + length > len(data):  # a chunk still being written
            break
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0 and length == 0:
            break
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):  # FULL, LAST
            rec = pb.Record()
            rec.ParseFromString(pending)
            out.append(rec)
    return out


def wandb_history(path) -> list[dict]:
    rows = []
    for rec in wandb_records(path):
        if rec.WhichOneof("record_type") == "history":
            rows.append({it.key or "/".join(it.nested_key): json.loads(it.value_json) for it in rec.history.item})
    return rows


def wandb_alerts(path) -> list[tuple[str, str]]:
    out = []
    for rec in wandb_records(path):
        if rec.WhichOneof("record_type") == "request" and rec.request.WhichOneof("request_type") == "alert":
            a = rec.request.alert
            out.append((a.title, a.text))
        elif rec.WhichOneof("record_type") == "alert":
            out.append((rec.alert.title, rec.alert.text))
    return out
