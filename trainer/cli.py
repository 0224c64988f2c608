"""`gradvar train`: presets, JSON configs and one option per config field (`--optim.lr 6e-4`, listed with
its default in `gradvar train --help`); also runnable as `python -m trainer.cli` (what torchrun launches).

    gradvar train --preset smoke --print-config
    gradvar train --preset tiny --slw.enabled --slw.total_steps 60 --name slw
    torchrun --standalone --nproc_per_node 2 -m trainer.cli --preset tiny --optim.micro-batch-size 4
"""

from __future__ import annotations

import argparse
import json
import sys

from .config import ConfigError, TrainConfig, apply_overrides, load_json
from .options import add_config_options
from .overrides import read_json_object
from .recipes import PRESETS, preset

USAGE = (
    "%(prog)s [--preset NAME] [--config FILE] [--deepspeed-config FILE] [--resume RUN_DIR] [--print-config]\n"
    "       [--SECTION.FIELD VALUE ...]"
)


def resolve_config(args) -> TrainConfig:
    """The preset (or the resumed run's config.json), then --config, --deepspeed-config and the options."""
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
    return apply_overrides(cfg, args.overrides)


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
    p.usage = USAGE
    p.add_argument(
        "--preset", default="tiny", metavar="NAME", help=f"named recipe: {', '.join(PRESETS)} (default tiny)"
    )
    p.add_argument("--config", metavar="FILE", help="JSON config (full or partial; dotted or nested keys)")
    p.add_argument(
        "--deepspeed-config",
        metavar="FILE",
        help="a DeepSpeed JSON config whose seqlen curriculum (data_efficiency.data_sampling."
        "curriculum_learning, or the older top-level curriculum_learning) sets SLW",
    )
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its newest good checkpoint")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    add_config_options(p)
    p.epilog = (
        "Each config field is an option (--optim.lr 6e-4, --optim.micro-batch-size 4, --slw.enabled); the "
        "defaults shown are the dataclasses', which a --preset changes: see --print-config."
    )


def restarted_by_torchrun() -> bool:
    """torchrun --max-restarts N restarts every worker with TORCHELASTIC_RESTART_COUNT > 0: continue from
    the run's newest good checkpoint instead of starting over (or from scratch if there is none yet)."""
    import os

    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0


def _error(exc, code: int) -> int:
    print(f"gradvar train: error: {exc}", file=sys.stderr)
    return code


def run(args) -> int:
    try:
        cfg = resolve_config(args)
    except ConfigError as exc:
        return _error(exc, 2)
    if args.resume:
        from pathlib import Path

        resume_dir = Path(args.resume)
        cfg.out_dir, cfg.name = str(resume_dir.parent), resume_dir.name
    if args.print_config:  # before torch is imported: printing a config takes a fraction of a second
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    return train(cfg, resume=bool(args.resume) or restarted_by_torchrun())


def train(cfg: TrainConfig, resume: bool) -> int:
    """Build the Trainer and run it; every expected failure is one line on stderr and an exit code."""
    from gradvar import RecordsWriteError

    from .checkpoint import CheckpointError
    from .data import DataError
    from .train import EXIT_NONFINITE, EXIT_PREEMPTED, NonFiniteError, Trainer

    try:
        trainer = Trainer(cfg, resume=resume)
    except (ConfigError, DataError) as exc:
        return _error(exc, 2)
    except CheckpointError as exc:
        return _error(exc, 1)
    try:
        summary = trainer.run()
    except NonFiniteError as exc:
        print(f"gradvar train: stopped: {exc}", file=sys.stderr)
        return EXIT_NONFINITE
    except (CheckpointError, RecordsWriteError) as exc:  # full disk, permissions: say so, no traceback
        return _error(exc, 1)
    finally:
        trainer.close()
    if summary.get("preempted"):
        return EXIT_PREEMPTED
    trainer.log(json.dumps(summary))
    return 0


def register_train(sub) -> None:
    p = sub.add_parser("train", help="train a GPT-2 with gradvar records (and optional SLW)")
    add_arguments(p)
    p.set_defaults(func=run)


def main(argv=None) -> int:
    from gradvar.cli import Parser

    parser = Parser(prog="python -m trainer.cli")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
