"""`gradvar report RUN_DIR [RUN_DIR ...] -o reports/NAME [--title T] [--target L]`.

The arguments are registered without importing the analysis (pandas, matplotlib, scipy): `--help` stays fast;
the analysis is imported when the command runs.
"""

from __future__ import annotations

import argparse
import sys


def add_report_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the report arguments to `parser` (the `gradvar report` subparser, or a standalone one)."""
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories (each with records/)")
    parser.add_argument("-o", "--out", required=True, help="output folder, e.g. reports/NAME")
    parser.add_argument("--title", default=None, help="report title")
    parser.add_argument(
        "--target", type=float, default=None, help="target validation loss (default: the worst of the methods' best)"
    )
    parser.set_defaults(func=main_report)
    return parser


def main_report(args) -> int:
    """Run `gradvar report`; a bad path or a failure is one line on stderr, never a traceback."""
    from ..records.load import NotARunDirError, is_run_dir
    from .report import write_report

    for p in args.run_dirs:
        if not is_run_dir(p):
            print(f"gradvar report: error: {p} is not a run directory (no records/ folder)", file=sys.stderr)
            return 2
    try:
        path = write_report(args.run_dirs, args.out, title=args.title, target=getattr(args, "target", None))
    except NotARunDirError as exc:
        print(f"gradvar report: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a report must fail with a sentence, not a stack
        print(f"gradvar report: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {path} and {path.with_suffix('.html')}")
    return 0


if __name__ == "__main__":
    sys.exit(main_report(add_report_arguments(argparse.ArgumentParser(prog="gradvar report")).parse_args()))
