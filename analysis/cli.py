"""`gradvar report` and `gradvar diagnose`, registered through the gradvar.commands entry points."""

from __future__ import annotations

import sys
import time


def register_report(sub) -> None:
    from .report.cli import add_report_arguments

    add_report_arguments(sub.add_parser("report", help="write a report (markdown, HTML, figures) from run directories"))
    _announce(
        sub.choices["report"],
        lambda a: (
            f"reading {len(a.run_dirs)} run director"
            f"{'y' if len(a.run_dirs) == 1 else 'ies'} (every part flushed so far), analysing, writing {a.out}"
        ),
    )


def register_diagnose(sub) -> None:
    from .diagnosis.cli import add_diagnose_arguments

    add_diagnose_arguments(
        sub.add_parser("diagnose", help="diagnose your own run's log: spikes, leading signals, advice")
    )
    _announce(
        sub.choices["diagnose"],
        lambda a: (
            f"reading {a.path}, finding spikes and leading signals" + (f", writing {a.out_dir}" if a.out_dir else "")
        ),
    )


def _announce(parser, what) -> None:
    """On a terminal, say on stderr what a long command is doing and how long it took (stdout stays the
    command's output; logs and pipes get nothing extra)."""
    run = parser.get_default("func")

    def announced(args) -> int:
        if not sys.stderr.isatty():
            return run(args)
        prog, t = f"gradvar {parser.prog.split()[-1]}", time.perf_counter()
        print(f"{prog}: {what(args)} ...", file=sys.stderr, flush=True)
        code = run(args)
        if not code:  # a failure already said so in its one line (None means success too)
            print(f"{prog}: done in {time.perf_counter() - t:.1f} s", file=sys.stderr, flush=True)
        return code

    parser.set_defaults(func=announced)
