"""The `gradvar` command. Subcommands are registered by the packages that own them through the
`gradvar.commands` entry-point group (see pyproject.toml), so this module imports neither trainer nor
analysis: each entry point is `register(subparsers)`, which adds a parser whose `func(args) -> int` runs it.
"""
from __future__ import annotations

import argparse
import sys
from importlib.metadata import entry_points


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gradvar", description="Training-instability diagnostics and a GPT trainer with SLW.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for ep in sorted(entry_points(group="gradvar.commands"), key=lambda e: e.name):
        try:
            ep.load()(sub)
        except Exception as exc:  # one broken command must not take the others down
            print(f"gradvar: command {ep.name!r} unavailable ({type(exc).__name__}: {exc})", file=sys.stderr)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = extra
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
