"""Read scalars from TensorBoard event files without TensorFlow or tensorboard installed.

TFRecord framing and the few protobuf fields of Event that hold scalars are decoded by hand, so reading a
user's event files needs only numpy and pandas.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import LogError

# --- TensorBoard: TFRecord framing and the few protobuf fields of Event we need, decoded by hand -------------
# Framing per record: uint64 length, uint32 masked crc32c(length), data, uint32 masked crc32c(data).
# Event{wall_time=1 double, step=2 int64, summary=5 Summary{value=1 Value{tag=1, simple_value=2 float,
# tensor=8 TensorProto{dtype=1, tensor_content=4, float_val=5, double_val=6}}}}.


def _crc_table() -> list:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc_table()


def _masked_crc32c(data: bytes) -> int:
    c = 0xFFFFFFFF
    for b in data:
        c = _CRC_TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    c ^= 0xFFFFFFFF
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _valid_tfrecord_header(data: bytes) -> bool:
    return len(data) >= 12 and _masked_crc32c(data[:8]) == int.from_bytes(data[8:12], "little")


def find_event_files(folder: Path) -> list:
    """Every TensorBoard event file under `folder`, oldest name first."""
    return sorted((f for f in folder.rglob("*tfevents*") if f.is_file()), key=lambda f: (f.name, str(f)))


def _records(data: bytes, name: str, notes: list):
    """Yield each record's payload; a cut-off tail (run killed while writing) ends the file with a note."""
    pos = 0
    while pos < len(data):
        if not _valid_tfrecord_header(data[pos : pos + 12]):
            if pos == 0:
                raise LogError(f"{name}: unknown format (not a TensorBoard event file: bad record header)")
            notes.append(f"{name}: unreadable data after byte {pos} ignored (file cut off?)")
            return
        n = int.from_bytes(data[pos : pos + 8], "little")
        end = pos + 12 + n
        if end + 4 > len(data):
            notes.append(f"{name}: last record cut off (run killed while writing?): ignored")
            return
        payload = data[pos + 12 : end]
        # Scalar events are small; checking their crc costs little, big ones (images, graphs) are skipped anyway.
        if n > 4096 or _masked_crc32c(payload) == int.from_bytes(data[end : end + 4], "little"):
            yield payload
        else:
            notes.append(f"{name}: record at byte {pos} fails its checksum: skipped")
        pos = end + 4


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ValueError("bad varint")
        b = buf[i]
        i += 1
        out |= (b & 0x7F) << shift
        if b < 0x80:
            return out, i
        shift += 7


def _fields(buf: bytes):
    """Yield (field_number, wire_type, value) of one protobuf message; value is int or bytes."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            val, i = _varint(buf, i)
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            val, i = buf[i : i + size], i + size
        elif wire == 2:
            n, i = _varint(buf, i)
            val, i = buf[i : i + n], i + n
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if i > len(buf):
            raise ValueError("truncated message")
        yield num, wire, val


def _tensor_scalar(buf: bytes):
    """The single float of a scalar TensorProto (DT_FLOAT=1 or DT_DOUBLE=2), else None."""
    dtype, vals = 1, []
    for num, wire, val in _fields(buf):
        if num == 1 and wire == 0:
            dtype = val
        elif num == 4 and wire == 2:
            content = val
            fmt = {1: "<f4", 2: "<f8"}.get(dtype)
            if fmt and len(content) in (4, 8):
                vals.extend(np.frombuffer(content, dtype=fmt).tolist())
        elif num in (5, 6):
            code = "<f4" if num == 5 else "<f8"
            vals.extend(np.frombuffer(val, dtype=code).tolist())  # packed (wire 2) or one value (wire 5/1)
    return float(vals[0]) if dtype in (1, 2) and len(vals) == 1 else None


def _event_scalars(payload: bytes):
    """Yield (step, wall_time, tag, value) for each scalar in one Event."""
    step, wall, summaries = 0, math.nan, []
    for num, wire, val in _fields(payload):
        if num == 1 and wire == 1:
            wall = float(np.frombuffer(val, "<f8")[0])
        elif num == 2 and wire == 0:
            step = val - (1 << 64) if val >= 1 << 63 else val
        elif num == 5 and wire == 2:
            summaries.append(val)
    for summary in summaries:
        for num, wire, value in _fields(summary):
            if num != 1 or wire != 2:
                continue
            tag, x = None, None
            for vn, vw, vv in _fields(value):
                if vn == 1 and vw == 2:
                    tag = vv.decode("utf-8", "replace")
                elif vn == 2 and vw == 5:
                    x = float(np.frombuffer(vv, "<f4")[0])
                elif vn == 8 and vw == 2:
                    x = _tensor_scalar(vv)
            if tag is not None and x is not None:
                yield step, wall, tag, x


def read_scalars(files, root: Path) -> tuple[pd.DataFrame, list]:
    """Long table (step, tag, value, wall_time) of every scalar; a re-logged (step, tag) keeps the newest."""
    rows, notes = [], []
    for f in files:
        try:
            data = Path(f).read_bytes()
        except OSError as exc:
            raise LogError(f"{f}: cannot read ({exc.strerror or exc})") from None
        rel = Path(f).parent.relative_to(root).as_posix() if Path(f).parent != root else ""
        prefix = f"{rel}/" if rel and rel != "." else ""  # add_scalars() writes one subfolder per series
        for payload in _records(data, str(f), notes):
            try:
                rows.extend((s, w, prefix + t, v) for s, w, t, v in _event_scalars(payload))
            except ValueError:
                notes.append(f"{f}: one malformed event skipped")
    long = pd.DataFrame(rows, columns=["step", "wall_time", "tag", "value"])
    n = len(long)
    long = long.sort_values("wall_time", kind="stable").drop_duplicates(["step", "tag"], keep="last")
    if len(long) < n:
        notes.append(f"{n - len(long)} scalars were logged twice for the same step (restarted run?): kept the newest")
    return long.sort_values(["step", "tag"], kind="stable").reset_index(drop=True), notes
