"""Load gradvar run directories into one `Run` object each, with the run's metadata joined into every table.

A run directory holds `config.json` and `records/` (read only through gradvar.records.read_records, which
handles part ordering, de-duplication after resumes and unreadable parts).

Metadata columns added to every table: `run`, `method`, `seed`, `batch_size`, `lr` and `peak_lr`.
`steps` already records `lr` (the *scheduled* LR of that step) and `batch_size`: those recorded columns are
kept as they are (the column contract), so in `steps` `lr` is the scheduled LR while in the other tables it
is the configured peak LR. `peak_lr` means the configured peak LR in every table; group by it (or by the
`Run.lr` attribute) when mixing tables.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from gradvar.records import read_records
from gradvar.schema import TABLES

from ..errors import NotARunDirError

TABLE_NAMES = tuple(TABLES)
META_COLUMNS = ("run", "method", "seed", "batch_size", "lr", "peak_lr")


@dataclass
class Run:
    """One training run: its config, its identity and its record tables (metadata columns joined in)."""

    name: str
    """Unique label of the run in an analysis (config name, made unique by load_runs)."""
    path: Path
    config: dict
    method: str
    """'baseline', 'slw' or the label the config gives (meta.method)."""
    batch_size: int | None
    """Global sequences per optimizer step (optim.batch_size)."""
    lr: float | None
    """Configured peak learning rate (optim.lr)."""
    seed: int | None
    steps: pd.DataFrame
    layers: pd.DataFrame
    probes: pd.DataFrame
    events: pd.DataFrame
    evals: pd.DataFrame
    ranks: pd.DataFrame = field(default_factory=pd.DataFrame)
    errors: list = field(default_factory=list)
    """Unreadable record parts that were skipped (path and reason)."""

    def table(self, name: str) -> pd.DataFrame:
        return getattr(self, name)

    @property
    def meta(self) -> dict:
        return {
            "run": self.name,
            "method": self.method,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "peak_lr": self.lr,
        }

    @property
    def slw(self) -> dict:
        return self.config.get("slw") or {}

    @property
    def meta_config(self) -> dict:
        return self.config.get("meta") or {}


def is_run_dir(path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / "records").is_dir()


def _read_config(path: Path) -> dict:
    cfg = path / "config.json"
    if not cfg.exists():
        return {}
    try:
        data = json.loads(cfg.read_text())
    except (OSError, ValueError) as exc:
        warnings.warn(f"{cfg}: unreadable config ({exc}); using defaults", stacklevel=3)
        return {}
    return data if isinstance(data, dict) else {}


def method_of(config: dict) -> str:
    """meta.method if given, else 'slw' when SLW is enabled, else 'baseline'."""
    method = (config.get("meta") or {}).get("method") or config.get("method")
    if method:
        return str(method)
    return "slw" if (config.get("slw") or {}).get("enabled") else "baseline"


def _num(value, kind):
    try:
        return kind(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _with_meta(df: pd.DataFrame, meta: dict) -> pd.DataFrame:
    """Append the metadata columns the table does not record itself (recorded columns win)."""
    n = len(df)
    extra = {}
    for key in META_COLUMNS:
        if key in df.columns:
            continue
        value = meta[key]
        if key in ("run", "method"):
            # A one-category Categorical costs one byte a row instead of a string a row (1 M-step runs).
            extra[key] = pd.Categorical.from_codes(np.zeros(n, dtype=np.int8), categories=[str(value)])
        else:
            extra[key] = np.full(n, np.nan if value is None else value)
    if not extra:
        return df
    return pd.concat([df.reset_index(drop=True), pd.DataFrame(extra)], axis=1)


def load_run(path, name: str | None = None) -> Run:
    """Read one run directory; raises NotARunDirError if `path` has no records/ folder."""
    p = Path(path)
    if not is_run_dir(p):
        why = "does not exist" if not p.exists() else "has no records/ folder"
        raise NotARunDirError(f"{p} is not a gradvar run directory ({why})")
    config = _read_config(p)
    optim = config.get("optim") or {}
    errors: list = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the skipped parts are kept in Run.errors instead
        tables = read_records(p, errors=errors)
    run = Run(
        name=name or str(config.get("name") or p.name),
        path=p,
        config=config,
        method=method_of(config),
        batch_size=_num(optim.get("batch_size"), int),
        lr=_num(optim.get("lr"), float),
        seed=_num(config.get("seed"), int),
        steps=pd.DataFrame(),
        layers=pd.DataFrame(),
        probes=pd.DataFrame(),
        events=pd.DataFrame(),
        evals=pd.DataFrame(),
        errors=errors,
    )
    meta = run.meta
    for table in TABLE_NAMES:
        df = tables.get(table)
        if df is None:
            df = pd.DataFrame(columns=list(TABLES[table]))
        setattr(run, table, _with_meta(df, meta))
    return run


def _unique_names(paths: list[Path], names: list[str]) -> list[str]:
    """Keep config names; disambiguate duplicates with the folder name, then a counter."""
    out, seen = [], set()
    counts = pd.Series(names).value_counts()
    for p, n in zip(paths, names):
        label = n if counts[n] == 1 else f"{n} ({p.name})"
        base, k = label, 2
        while label in seen:
            label, k = f"{base} #{k}", k + 1
        seen.add(label)
        out.append(label)
    return out


def load_runs(paths) -> list[Run]:
    """Load several run directories; run names are made unique across them."""
    paths = [Path(p) for p in paths]
    for p in paths:
        if not is_run_dir(p):
            raise NotARunDirError(f"{p} is not a gradvar run directory (no records/ folder)")
    names = [str(_read_config(p).get("name") or p.name) for p in paths]
    return [load_run(p, name) for p, name in zip(paths, _unique_names(paths, names))]


def concat(runs, table: str) -> pd.DataFrame:
    """One table of several runs stacked (metadata columns tell them apart)."""
    frames = [r.table(table) for r in runs if len(r.table(table))]
    if not frames:
        cols = list(TABLES.get(table, ())) + [c for c in META_COLUMNS if c not in TABLES.get(table, ())]
        return pd.DataFrame(columns=cols)
    out = pd.concat(frames, ignore_index=True)
    for key in ("run", "method"):
        if key in out.columns:
            out[key] = out[key].astype(str)
    return out
