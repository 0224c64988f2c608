"""`gradvar study`: run a study preset's grid with gradvar records, then write its report.

    gradvar study --preset quick -o reports/quick
    gradvar study --preset quick --data.source my_corpus.txt --list     # a config option applies to every run
    python -m study --preset smoke -o reports/smoke

Rerunning a finished study only rewrites the report; an interrupted one continues where it stopped.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

PER_RUN = ("name", "out_dir", "seed")
"""Config fields the study sets per run, so not options of the study."""


def write_manifest(study, out_root: Path) -> None:
    out_root.mkdir(parents=True, exist_ok=True)
    manifest = {
        "study": study.name,
        "preset": study.preset,
        "description": study.description,
        "runs": [
            {"name": s.name, "group": s.group, "role": s.role, "labels": s.labels, "overrides": s.overrides}
            for s in study.runs
        ],
    }
    (out_root / "study.json").write_text(json.dumps(manifest, indent=2))


def _fail(message: str) -> int:
    print(f"gradvar study: error: {message}", file=sys.stderr)
    return 2


def _study(args):
    """The preset's study with the command line's config options set in every run (checked here, once)."""
    from trainer.config import ConfigError, apply_overrides
    from trainer.recipes import preset

    from .presets import STUDIES

    if args.preset not in STUDIES:
        raise ConfigError(f"unknown study preset {args.preset!r}; choose one of {', '.join(STUDIES)}")
    study = STUDIES[args.preset]()
    for spec in study.runs:
        spec.overrides.update(args.overrides)
    apply_overrides(preset(study.preset), study.runs[0].overrides).validate()
    return study


def main_study(args) -> int:
    from trainer.config import ConfigError

    from .grid import command, is_complete, run_all

    try:
        study = _study(args)
    except ConfigError as exc:
        return _fail(str(exc))
    lead = None
    if args.lead:
        try:
            lead = Path(args.lead).read_text().splitlines()
        except OSError as e:
            return _fail(f"cannot read --lead {args.lead}: {e.strerror}")
    out_root = Path(args.runs_dir or f"runs/study-{study.name}")
    if not (args.report_only and (out_root / "study.json").exists()):  # --report-only writes nothing beside the runs
        write_manifest(study, out_root)
    if args.list:
        for s in study.runs:
            print(s.name, " ".join(command(study, s, out_root)[3:]))
        return 0
    if args.report_only:
        run_dirs = [out_root / s.name for s in study.runs if is_complete(out_root / s.name)]
    else:
        run_dirs = run_all(study, out_root, args.jobs or study.jobs)
    if not run_dirs:
        print("gradvar study: error: no run finished", file=sys.stderr)
        return 1
    from .report.layout import write_study_report

    path = write_study_report(
        out_root,
        Path(args.output or f"reports/{study.name}"),
        command_line=_command_line(),
        extra_lead=lead,
        cache_dir=(getattr(args, "overrides", None) or {}).get("data.cache_dir"),
    )
    print(f"report written: {path}")
    return 0 if len(run_dirs) == len(study.runs) else 1


def _command_line() -> str:
    """How this study was started, as a user would type it (not the interpreter's path to the script)."""
    prog = "gradvar" if Path(sys.argv[0]).name == "gradvar" else "python -m study"
    args = sys.argv[1:]
    if prog == "python -m study" and args[:1] == ["study"]:
        args = args[1:]
    return " ".join([prog, *map(shlex.quote, args)])


def register(sub) -> None:
    add_arguments(sub.add_parser("study", help="run the baseline/SLW study grid and write its report"))


def register_tune(sub) -> None:
    """`gradvar tune-slw` (study/tune.py), registered from here so that its --help imports no numpy."""
    from gradvar.cli import lazy
    from trainer.options import add_config_options

    p = sub.add_parser(
        "tune-slw",
        help="choose SLW's start length and duration T by the paper's low-cost rule",
        usage="%(prog)s [--preset NAME] [-o DIR] [--multiples N] [--tol X] [--jobs N] [--SECTION.FIELD VALUE ...]",
        epilog="Config options (--optim.lr 0.1) are set in every trial run.",
    )
    p.add_argument(
        "--preset", default="tiny", metavar="NAME", help="trainer preset the trials start from (default tiny)"
    )
    p.add_argument("-o", "--output", default="runs/tune-slw", metavar="DIR", help="trial runs, tune.json and slw.json")
    p.add_argument("--multiples", type=int, default=3, help="trial length in multiples of the LR warmup (default 3)")
    p.add_argument(
        "--tol", type=float, default=0.05, help="significant perplexity rise between evaluations (default 0.05)"
    )
    p.add_argument("--jobs", type=int, default=2, help="trials side by side (default 2)")
    add_config_options(p, exclude=("name", "out_dir", "seed"))
    p.set_defaults(func=lazy("study.tune:main_tune"))


def add_arguments(p) -> None:
    from trainer.options import add_config_options

    from .presets import STUDIES

    p.usage = (
        "%(prog)s [--preset NAME] [-o DIR] [--runs-dir DIR] [--jobs N] [--list] [--report-only] [--lead FILE]\n"
        "       [--SECTION.FIELD VALUE ...]"
    )
    p.epilog = "Config options (--data.source my_corpus.txt) are set in every run of the study."
    p.add_argument("--preset", default="quick", metavar="NAME", help=f"study preset: {', '.join(STUDIES)}")
    p.add_argument("-o", "--output", metavar="DIR", help="report folder (default reports/<preset>)")
    p.add_argument("--runs-dir", metavar="DIR", help="where the runs go (default runs/study-<preset>)")
    p.add_argument("--jobs", type=int, metavar="N", help="runs side by side (default: the preset's, 2 on CPU)")
    p.add_argument("--list", action="store_true", help="print the runs and their commands, run nothing")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="start no run: write the report from the runs already finished (e.g. while the study still runs)",
    )
    p.add_argument(
        "--lead",
        metavar="FILE",
        help="markdown put first in the report: findings written after "
        "reading the generated report (rerunning a finished study only rewrites the report)",
    )
    add_config_options(p, exclude=PER_RUN)
    p.set_defaults(func=main_study)


def main(argv=None) -> int:
    from gradvar.cli import Parser

    parser = Parser(prog="python -m study")
    add_arguments(parser)
    return main_study(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
