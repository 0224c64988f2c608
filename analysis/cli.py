"""`gradvar report` and `gradvar diagnose`, registered through the gradvar.commands entry points.

Registering imports no pandas, scipy or matplotlib (the analysis is imported when a command runs), so
`gradvar --help` and `gradvar report --help` stay fast.
"""

from __future__ import annotations

import argparse
import sys
import time

from gradvar.cli import lazy
from gradvar.spikes import MIN_RISE, RATIO_THRESHOLD

from .defaults import HORIZON
from .log_formats import CSV_HINT, FORMATS_READ


def register_report(sub) -> None:
    add_report_arguments(sub.add_parser("report", help="write a report (markdown, HTML, figures) from run directories"))
    _announce(
        sub.choices["report"],
        lambda a: (
            f"reading {len(a.run_dirs)} run director"
            f"{'y' if len(a.run_dirs) == 1 else 'ies'} (every part flushed so far), analysing, writing {a.out}"
        ),
    )


def register_diagnose(sub) -> None:
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


def add_report_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the report arguments to `parser` (the `gradvar report` subparser, or a standalone one)."""
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories (each with records/)")
    parser.add_argument("-o", "--out", required=True, help="output folder, e.g. reports/NAME")
    parser.add_argument("--title", default=None, help="report title")
    parser.add_argument(
        "--target", type=float, default=None, help="target validation loss (default: the worst of the methods' best)"
    )
    parser.set_defaults(func=lazy("analysis.report.report:main_report"))
    return parser


def add_diagnose_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the diagnose arguments to `parser` (a subparser of `gradvar`, or a standalone parser)."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "formats read:\n" + "\n".join(f"  - {f}" for f in FORMATS_READ) + f"\n{CSV_HINT}"
    parser.add_argument(
        "path", help="a training log, as written or as pasted (formats below; a 'step,loss' CSV always works)"
    )
    parser.add_argument(
        "--logging-steps",
        type=int,
        default=None,
        metavar="N",
        help="the trainer's logging interval, for logs whose lines carry no step (HF Trainer console dicts): "
        "entry k is step k*N (default: the tqdm bar's count where the paste has one, else 1, 2, ...)",
    )
    parser.add_argument("-o", "--out-dir", default=None, help="write report.md, report.html and figures here")
    parser.add_argument(
        "--ratio-threshold",
        type=float,
        default=RATIO_THRESHOLD,
        help=f"loss / earlier minimum above which a step is a spike (default {RATIO_THRESHOLD})",
    )
    parser.add_argument(
        "--min-rise",
        type=float,
        default=MIN_RISE,
        help=f"absolute rise in nats a spike must also have (default {MIN_RISE})",
    )
    parser.add_argument(
        "--horizon",
        type=int,
        default=HORIZON,
        help=f"log entries ahead in which a signal must warn (default {HORIZON})",
    )
    parser.add_argument("--json", action="store_true", help="print the diagnosis as JSON instead of text")
    parser.add_argument(
        "--vocab-size",
        type=int,
        default=None,
        help="the model's vocabulary size, when the log does not name it: tells a run from scratch (first loss "
        "near ln V) from a fine-tune",
    )
    parser.add_argument(
        "--no-seq-axis",
        dest="seq_axis",
        action="store_false",
        default=None,
        help="the model has no sequence-length axis (an RNN/LSTM over a fixed unroll, a CNN): no Sequence Length "
        "Warmup advice",
    )
    parser.set_defaults(func=lazy("analysis.diagnosis.cli:main_diagnose"))
    return parser
