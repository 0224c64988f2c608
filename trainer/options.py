"""Command-line options generated from the config dataclass tree: one `--section.field VALUE` option per
field (`--optim.lr 0.1`; `--optim.micro-batch-size` works as well as `--optim.micro_batch_size`), listed in
`--help` with its type, default and the one-line docstring written under the field. `gradvar train`,
`gradvar study` and `gradvar tune-slw` all take them.

Values stay strings here; `apply_overrides` coerces them to the field's type, so a command line, a JSON file
and a study preset go through the same checks and give the same one-line errors.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import json
import textwrap
import typing
from functools import cache

from .config import TrainConfig

TYPE_NAMES = {int: "INT", float: "FLOAT", str: "TEXT", bool: "BOOL", list: "JSON"}


@dataclasses.dataclass(frozen=True)
class Option:
    key: str
    """Dotted config key, e.g. optim.micro_batch_size."""
    type: type
    default: object
    doc: str


@cache
def field_docs(cls: type) -> dict[str, str]:
    """The string literal written under each field of a dataclass (its attribute docstring), on one line."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    docs = {}
    for node, after in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = " ".join(after.value.value.split())  # a docstring wrapped over lines reads as one
    return docs


def config_options(cfg=None, prefix: str = "") -> list[Option]:
    """Every leaf field of the config tree, depth first, in declaration order."""
    cfg = TrainConfig() if cfg is None else cfg
    hints, docs, out = typing.get_type_hints(type(cfg)), field_docs(type(cfg)), []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out += config_options(value, f"{prefix}{f.name}.")
        else:
            typ = typing.get_origin(hints[f.name]) or hints[f.name]
            out.append(Option(f"{prefix}{f.name}", typ, value, docs.get(f.name, "")))
    return out


class Formatter(argparse.HelpFormatter):
    """Room for the dotted option names beside their help."""

    def __init__(self, prog, **kwargs):
        super().__init__(prog, max_help_position=34, **kwargs)


class _Override(argparse.Action):
    """Collects `--section.field VALUE` into args.overrides (a dict, in command-line order)."""

    def __call__(self, parser, namespace, values, option_string=None):
        overrides = dict(getattr(namespace, "overrides", None) or {})
        overrides[self.dest] = values
        namespace.overrides = overrides


def _shown(value) -> str:
    return json.dumps(value) if isinstance(value, (bool, list)) else str(value)


def add_config_options(parser: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> None:
    """Add one option per config field (except `exclude`), grouped by section, to `parser`."""
    parser.set_defaults(overrides={})
    parser.formatter_class = Formatter
    root = TrainConfig()
    groups = {"": parser.add_argument_group("run", root.__doc__)}
    for f in dataclasses.fields(root):
        if dataclasses.is_dataclass(section := getattr(root, f.name)):
            groups[f.name] = parser.add_argument_group(f.name, section.__doc__)
    for opt in config_options():
        if opt.key in exclude:
            continue
        section, _, leaf = opt.key.rpartition(".")
        flag = f"--{opt.key}"
        kwargs = {
            "dest": opt.key,
            "action": _Override,
            "default": argparse.SUPPRESS,
            "metavar": TYPE_NAMES.get(opt.type, "VALUE"),
        }
        if opt.type is bool:  # `--slw.enabled` alone means true
            kwargs.update(nargs="?", const="true")
        doc = opt.doc.replace("%", "%%")  # argparse %-formats help strings
        groups[section].add_argument(flag, help=f"{doc} (default {_shown(opt.default)})", **kwargs)
        if "_" in leaf:  # the dashed spelling, accepted and not listed twice
            dashed = f"--{section + '.' if section else ''}{leaf.replace('_', '-')}"
            groups[section].add_argument(dashed, help=argparse.SUPPRESS, **kwargs)
