"""Setting config fields from outside: dotted keys (`optim.lr`) with string values from the command line or
JSON values from a file, coerced to each field's type with one-line errors; JSON config files, nested or
dotted; and DeepSpeed's `curriculum_learning` block taken as is."""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    from .config import TrainConfig


def _field_types(obj) -> dict:
    hints = typing.get_type_hints(type(obj))
    return {f.name: hints[f.name] for f in fields(obj)}


def _coerce(value, typ, key: str):
    try:
        if typ is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if typ is int:
            f = float(value)
            if f != int(f):
                raise ValueError
            return int(f)
        if typ is float:
            return float(value)
        if typ is str:
            return str(value)
        if typ is list or typing.get_origin(typ) is list:
            out = json.loads(value) if isinstance(value, str) else list(value)
            if not isinstance(out, list):
                raise ValueError
            return out
    except (TypeError, ValueError, OverflowError, json.JSONDecodeError):  # OverflowError: int("inf")
        raise ConfigError(f"{key}: cannot read {value!r} as {getattr(typ, '__name__', typ)}") from None
    raise ConfigError(f"{key}: unsupported type {typ}")


def apply_overrides(cfg: TrainConfig, overrides: dict) -> TrainConfig:
    """Set dotted keys ('optim.lr') to values (strings from the command line, or JSON values)."""
    for key, value in overrides.items():
        if key == "curriculum_learning":  # DeepSpeed's block, taken as is
            apply_deepspeed_curriculum(cfg, value)
            continue
        obj, parts = cfg, key.split(".")
        for part in parts[:-1]:
            if not dataclasses.is_dataclass(obj) or part not in _field_types(obj):
                raise ConfigError(f"unknown config key {key!r}")
            obj = getattr(obj, part)
        types = _field_types(obj) if dataclasses.is_dataclass(obj) else {}
        leaf = parts[-1]
        if leaf not in types or dataclasses.is_dataclass(getattr(obj, leaf)):
            if leaf in types and isinstance(value, dict):
                apply_overrides(cfg, {f"{key}.{k}": v for k, v in value.items()})
                continue
            known = ", ".join(sorted(types)) or "none"
            raise ConfigError(f"unknown config key {key!r} (known here: {known})")
        setattr(obj, leaf, _coerce(value, types[leaf], key))
    return cfg


def apply_deepspeed_curriculum(cfg: TrainConfig, block) -> None:
    from gradvar.slw import SLWSchedule

    if not isinstance(block, dict):
        raise ConfigError("curriculum_learning must be a JSON object (DeepSpeed's block)")
    if not block.get("enabled", True):
        cfg.slw.enabled = False
        return
    try:
        sched = SLWSchedule.from_deepspeed(block)
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as exc:  # any malformed block
        raise ConfigError(f"curriculum_learning: {exc}") from None
    s = cfg.slw
    s.enabled, s.schedule_type, s.min_seqlen = True, sched.schedule_type, sched.min_seqlen
    s.total_steps, s.difficulty_step, s.root_degree = sched.total_steps, sched.difficulty_step, sched.root_degree
    s.difficulties, s.max_steps = list(sched.difficulties), list(sched.max_steps)
    if sched.max_seqlen != cfg.optim.seq_len:
        cfg.optim.seq_len = sched.max_seqlen


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "curriculum_learning":
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def read_json_object(path) -> dict:
    """A JSON file that must hold one object; every failure is a ConfigError naming the file."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise ConfigError(f"{path}: JSON nested too deeply") from None
    except OSError as exc:  # a folder, no permission, ...
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror or exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a JSON object")
    return data


def load_json(path) -> dict:
    """Read a config JSON (a full config.json, or a partial one, or a DeepSpeed config with its block)."""
    data = read_json_object(path)
    data.pop("meta", None)
    ds = data.pop("curriculum_learning", None)
    try:
        flat = flatten(data)
    except RecursionError:
        raise ConfigError(f"{path}: JSON nested too deeply") from None
    if ds is not None:
        flat["curriculum_learning"] = ds
    return flat
