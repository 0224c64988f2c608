"""Append-only, crash-safe record tables: Parquet parts under run_dir/records/<table>/.

Each flush writes one new part per table (temp name, fsync, rename), so a SIGKILL loses at most the
unflushed rows and never leaves an unreadable file in place. Parts are merged in levels of FANOUT (as in an
LSM tree), which keeps the file count logarithmic and the flush cost flat as a run grows. The reader
orders parts by their sequence number and keeps the newest copy of each key, so a crash between writing a
merged part and deleting its inputs, or a resumed run rewriting steps, never yields duplicate rows.
"""

from __future__ import annotations

import errno
import json
import os
import re
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .schema import SCHEMA_VERSION, TABLE_KEYS, TABLES

FANOUT = 16
_PART = re.compile(r"^L(\d+)-(\d{10})\.parquet$")


class RecordsWriteError(RuntimeError):
    """A record file could not be written (full disk, permissions); buffered rows are kept."""


_FAULT_HITS: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Test-only fault injection (tests/faults): with GRADVAR_FAULT="<name>@<n>", the n-th time this process
    reaches point <name> it prints "GRADVAR_FAULT <name> reached" to stderr and sleeps GRADVAR_FAULT_SLEEP
    seconds (default 60), so a test can SIGKILL it exactly there. Points: records_write (a Parquet part is
    written under its temporary name, not yet renamed), checkpoint_write (the same for a checkpoint).
    Unset (always, outside tests), it costs one environment lookup per file written."""
    spec = os.environ.get("GRADVAR_FAULT")
    if not spec:
        return
    point, _, nth = spec.partition("@")
    if point != name:
        return
    _FAULT_HITS[name] = _FAULT_HITS.get(name, 0) + 1
    if _FAULT_HITS[name] == int(nth or 1):
        print(f"GRADVAR_FAULT {name} reached ({spec}, pid {os.getpid()})", file=sys.stderr, flush=True)
        time.sleep(float(os.environ.get("GRADVAR_FAULT_SLEEP", "60")))


def _atomic_write_bytes(path: Path, write) -> None:
    """Write via `write(tmp_path)`, fsync, rename over `path`; on failure leave no temp file behind."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            why = "disk full" if exc.errno == errno.ENOSPC else exc.strerror or str(exc)
            raise RecordsWriteError(f"could not write {path}: {why}") from exc
        raise
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    """Make the renames into `folder` durable. Best effort: some filesystems and platforms refuse to open or
    fsync a folder, and the file written is then as durable as they make a rename."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    _atomic_write_bytes(Path(path), lambda tmp: Path(tmp).write_text(text))


def _parts(folder: Path) -> list[tuple[int, int, Path]]:
    """(seq, level, path) of every part, oldest first."""
    out = []
    if folder.is_dir():
        for p in folder.iterdir():
            m = _PART.match(p.name)
            if m:
                out.append((int(m.group(2)), int(m.group(1)), p))
    return sorted(out)


def _dedup(df: pd.DataFrame, table: str) -> pd.DataFrame:
    key = TABLE_KEYS.get(table)
    if df.empty:
        return df
    if key is None or not set(key) <= set(df.columns):
        return df.drop_duplicates(ignore_index=True)
    return df.drop_duplicates(subset=list(key), keep="last", ignore_index=True)


class RecordWriter:
    """Buffers rows per table and writes them as Parquet parts on flush()."""

    def __init__(self, run_dir, resume_step: int | None = None):
        self.root = Path(run_dir) / "records"
        self.root.mkdir(parents=True, exist_ok=True)
        self._buf: dict[str, list[dict]] = {}
        self._seq = max((s for t in TABLES for s, _, _ in _parts(self.root / t)), default=0)
        meta = self.root / "schema.json"
        if not meta.exists():
            atomic_write_text(
                meta,
                json.dumps(
                    {"schema_version": SCHEMA_VERSION, "tables": {k: list(v) for k, v in TABLES.items()}}, indent=1
                ),
            )
        if resume_step is not None:
            self.truncate_after(resume_step)

    def append(self, table: str, rows) -> None:
        if isinstance(rows, dict):
            rows = [rows]
        self._buf.setdefault(table, []).extend(rows)

    def pending(self) -> int:
        return sum(len(v) for v in self._buf.values())

    def flush(self) -> None:
        """Write every buffered table as one new part; rows stay buffered if the write fails."""
        for table in list(self._buf):
            rows = self._buf[table]
            if not rows:
                continue
            self._write_part(table, pd.DataFrame.from_records(rows), level=0)
            self._buf[table] = []
            self._compact(table)

    def _write_part(self, table: str, df: pd.DataFrame, level: int) -> Path:
        folder = self.root / table
        folder.mkdir(exist_ok=True)
        self._seq += 1
        path = folder / f"L{level}-{self._seq:010d}.parquet"
        tbl = pa.Table.from_pandas(df, preserve_index=False)

        def write(tmp):
            pq.write_table(tbl, tmp)
            fault_point("records_write")  # test-only (tests/faults); a no-op unless GRADVAR_FAULT is set

        _atomic_write_bytes(path, write)
        return path

    def _compact(self, table: str) -> None:
        """Merge FANOUT parts of one level into one part of the next level (newest data wins)."""
        level = 0
        while True:
            same = [(s, p) for s, lv, p in _parts(self.root / table) if lv == level]
            if len(same) < FANOUT:
                return
            frames = [pq.read_table(p).to_pandas() for _, p in same]
            merged = _dedup(pd.concat(frames, ignore_index=True), table)
            self._write_part(table, merged, level + 1)
            for _, p in same:
                p.unlink(missing_ok=True)
            level += 1

    def truncate_after(self, step: int) -> None:
        """Drop rows with step > `step` (a resumed run redoes them); rewrites only the parts affected."""
        for table in TABLES:
            for _, level, path in _parts(self.root / table):
                try:
                    df = pq.read_table(path).to_pandas()
                except Exception:  # an unreadable part holds nothing we can keep
                    continue
                if "step" in df and (df["step"] > step).any():
                    keep = df[df["step"] <= step]
                    if len(keep):
                        self._write_part(table, keep, level)
                    path.unlink()
        self._buf.clear()

    def close(self) -> None:
        self.flush()


def _read_parts(folder: Path, errors: list | None, attempts: int = 20) -> list[pd.DataFrame]:
    """Every part of one table. A run still training may merge parts while they are read: a listed part that
    is gone was merged into a newer one, so the listing is taken again (parts are renamed into place whole,
    so no half-written file is ever listed)."""
    for _ in range(attempts):
        frames, vanished = [], False
        for _, _, path in _parts(folder):
            try:
                frames.append(pq.read_table(path).to_pandas())
            except FileNotFoundError:
                vanished = True
                break
            except Exception as exc:
                msg = f"{path}: unreadable records part skipped ({type(exc).__name__}: {exc})"
                warnings.warn(msg, stacklevel=3)
                if errors is not None:
                    errors.append(msg)
        if not vanished:
            return frames
    raise RuntimeError(f"{folder}: parts kept vanishing while being read ({attempts} listings)")


def read_records(run_dir, tables=None, errors: list | None = None) -> dict[str, pd.DataFrame]:
    """Every table under run_dir/records as a DataFrame sorted by step.

    Unreadable parts are skipped with a warning (and their paths and reasons appended to `errors` when
    given): every readable row is returned.
    """
    root = Path(run_dir) / "records"
    if not root.is_dir():
        raise FileNotFoundError(f"{run_dir}: no records/ folder (is this a gradvar run directory?)")
    out = {}
    for table in tables or [t for t in TABLES if (root / t).is_dir()]:
        frames = _read_parts(root / table, errors)
        cols = list(TABLES.get(table, ()))
        df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)
        df = _dedup(df, table)
        if "step" in df and len(df):
            df = df.sort_values("step", kind="stable", ignore_index=True)
        out[table] = df
    return out
