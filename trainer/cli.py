"""`gradvar train`: presets, JSON configs and dotted overrides (`--optim.lr 6e-4`); also runnable as
`python -m trainer.cli` (that is what torchrun launches)."""
from __future__ import annotations

import argparse
import json
import sys

from .config import ConfigError, TrainConfig, apply_overrides, load_json, read_json_object
from .recipes import PRESETS, preset


def parse_overrides(tokens: list[str]) -> dict:
    """['--optim.lr', '6e-4', '--slw.enabled=true'] -> {'optim.lr': '6e-4', 'slw.enabled': 'true'}"""
    out, i = {}, 0
    while i < len(tokens):
        tok = tokens[i]
        if not tok.startswith("--"):
            raise ConfigError(f"unexpected argument {tok!r} (overrides look like --optim.lr 6e-4)")
        key = tok[2:]
        if "=" in key:
            key, value = key.split("=", 1)
            i += 1
        elif i + 1 < len(tokens):
            value, i = tokens[i + 1], i + 2
        else:
            raise ConfigError(f"{tok} needs a value")
        out[key.replace("-", "_") if "." not in key else key] = value
    return out


def resolve_config(args, overrides: list[str]) -> TrainConfig:
    if args.resume:
        from pathlib import Path

        saved = Path(args.resume) / "config.json"
        if not saved.exists():
            raise ConfigError(f"{args.resume}: no config.json (not a gradvar run directory)")
        cfg = apply_overrides(TrainConfig(), load_json(saved))
    else:
        cfg = preset(args.preset)
    if args.config:
        cfg = apply_overrides(cfg, load_json(args.config))
    if args.deepspeed_config:
        cfg = apply_overrides(cfg, {"curriculum_learning": deepspeed_block(args.deepspeed_config)})
    cfg = apply_overrides(cfg, parse_overrides(overrides))
    if args.name:
        cfg.name = args.name
    return cfg


def deepspeed_block(path) -> dict:
    """The seqlen curriculum of a DeepSpeed config file (0.19's data_efficiency block or the older top-level one)."""
    from gradvar.slw import deepspeed_curriculum

    try:
        return deepspeed_curriculum(read_json_object(path))
    except ConfigError:
        raise
    except (ValueError, AttributeError, TypeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="tiny", help=f"named recipe: {', '.join(PRESETS)} (default tiny)")
    p.add_argument("--config", help="JSON config (full or partial; dotted or nested keys)")
    p.add_argument("--deepspeed-config", help="a DeepSpeed JSON config whose seqlen curriculum (data_efficiency.data_sampling."
                   "curriculum_learning, or the older top-level curriculum_learning) sets SLW")
    p.add_argument("--name", help="run name (the run directory is out_dir/name)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its newest good checkpoint")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.epilog = "Any config field can be overridden: --optim.lr 6e-4 --slw.enabled true --model.n_layer 6"


def restarted_by_torchrun() -> bool:
    """torchrun --max-restarts N restarts every worker with TORCHELASTIC_RESTART_COUNT > 0: continue from
    the run's newest good checkpoint instead of starting over (or from scratch if there is none yet)."""
    import os

    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0


def run(args) -> int:
    from gradvar.records import RecordsWriteError

    from .checkpoint import CheckpointError
    from .data import DataError
    from .train import EXIT_NONFINITE, EXIT_PREEMPTED, NonFiniteError, Trainer

    try:
        cfg = resolve_config(args, args.overrides)
        if args.resume:
            from pathlib import Path

            resume_dir = Path(args.resume)
            cfg.out_dir, cfg.name = str(resume_dir.parent), resume_dir.name
        if args.print_config:
            print(json.dumps(cfg.to_dict(), indent=2))
            return 0
        resume = bool(args.resume) or restarted_by_torchrun()
        trainer = Trainer(cfg, resume=resume)
    except (ConfigError, DataError) as exc:
        print(f"gradvar train: error: {exc}", file=sys.stderr)
        return 2
    except CheckpointError as exc:
        print(f"gradvar train: error: {exc}", file=sys.stderr)
        return 1
    try:
        summary = trainer.run()
    except NonFiniteError as exc:
        print(f"gradvar train: stopped: {exc}", file=sys.stderr)
        return EXIT_NONFINITE
    except (CheckpointError, RecordsWriteError) as exc:  # full disk, permissions: say so, no traceback
        print(f"gradvar train: error: {exc}", file=sys.stderr)
        return 1
    finally:
        trainer.close()
    if summary.get("preempted"):
        return EXIT_PREEMPTED
    trainer.log(json.dumps(summary))
    return 0


def register_train(sub) -> None:
    p = sub.add_parser("train", help="train a GPT-2 with gradvar records (and optional SLW)")
    add_arguments(p)
    p.set_defaults(func=run, accepts_overrides=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.cli")
    add_arguments(parser)
    args, extra = parser.parse_known_args(argv)
    args.overrides = extra
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
