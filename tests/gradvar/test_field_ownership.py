"""No class writes another's fields: in gradvar, an object's attributes are set and its containers changed only by
its own methods (the monitor's step by gradvar.step.MonitorStep, the run's host state by gradvar.run_state),
so what changes a field is found in one class. Read from the source of every module."""

from __future__ import annotations

import ast
from pathlib import Path

import gradvar

MUTATORS = frozenset(
    {"append", "extend", "insert", "pop", "popitem", "clear", "update", "setdefault", "remove", "add", "discard"}
)
"""Methods of list, dict and set that change them in place."""

ALLOWED = {
    ("loop_hooks.py", "self.capture.active"): "GradCapture's on/off switch, which whoever pauses recording sets",
    ("quantities/probe.py", "capture.active"): "the same switch, turned off while a probe runs",
    ("loop_hooks.py", "self.capture.on_pass_end"): "GradCapture's callback slot for its owner",
    ("quantities/logits.py", "box.value"): "the box is the attention hook's out-parameter, made to be filled by it",
}
"""(module, target) writes that stay, and why."""


def _chain(node) -> list[str]:
    """`a.b.c` -> ["a", "b", "c"]; a base that is no name (a call, a subscript) is "?"."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    parts.append(node.id if isinstance(node, ast.Name) else "?")
    return parts[::-1]


def _fresh(func) -> set[str]:
    """The names a function binds only to what a call returns: objects it made (or copied) itself."""
    from_call, other = set(), set()
    for node in ast.walk(func):
        if isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    (from_call if isinstance(node.value, ast.Call) else other).add(t.id)
        elif isinstance(node, (ast.For, ast.comprehension, ast.With, ast.AnnAssign, ast.AugAssign, ast.NamedExpr)):
            targets = [getattr(node, "target", None)] + [i.optional_vars for i in getattr(node, "items", [])]
            other |= {n.id for t in targets if t is not None for n in ast.walk(t) if isinstance(n, ast.Name)}
    args = func.args
    other |= {a.arg for a in args.posonlyargs + args.args + args.kwonlyargs}
    return from_call - other


def _others(chain: list[str], fresh: set[str], depth: int) -> bool:
    """Whether `chain` reaches `depth` attributes into an object the code does not own: past `self`/`cls`, or
    into any other name that is not an object the function made."""
    base = chain[0]
    if base in ("self", "cls"):
        return len(chain) > depth + 1
    return base not in fresh and len(chain) > depth


def foreign_writes(source: str) -> list[tuple[int, str]]:
    """(line, target) of each write into another object's fields: `x.f = v` (also augmented and in tuples) for
    any x but self, a fresh local or cls; `self.a.f = v`; `x.f[k] = v`; `x.f.append(...)` and the other
    in-place changes of a list, dict or set held in another's field, `self.a.f.append(...)` included."""
    found = []
    funcs = [n for n in ast.walk(ast.parse(source)) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    for func in funcs:
        fresh = _fresh(func)
        nested = {
            id(n) for f in ast.walk(func) if f is not func and isinstance(f, ast.FunctionDef) for n in ast.walk(f)
        }
        for node in ast.walk(func):
            if id(node) in nested:
                continue  # checked as its own function, with its own locals
            targets = []
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
                targets = [node.target]
            elif isinstance(node, ast.Delete):
                targets = node.targets
            for target in [e for t in targets for e in (t.elts if isinstance(t, ast.Tuple) else [t])]:
                # x.f = v changes x; x.f[k] = v changes the container in x.f
                held = target.value if isinstance(target, ast.Subscript) else target
                if isinstance(held, ast.Attribute) and _others(_chain(held), fresh, 1):
                    found.append((node.lineno, ast.unparse(target)))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in MUTATORS:
                receiver = node.func.value
                if isinstance(receiver, ast.Attribute) and _others(_chain(receiver), fresh, 1):
                    found.append((node.lineno, ast.unparse(node.func)))
    return found


def test_the_checker_sees_foreign_writes_and_passes_own_ones():
    bad = """
def f(mon, obj, ctx):
    mon.rows.tokens = 1
    obj._x = 2
    ctx.extras["pre_clip"] = 3
    ctx.side_rows.extend(rows)
    mon.a, self.b = 4, 5
    for q in qs:
        q.needs_elementwise = False
class C:
    def g(self):
        self.rows.events.append(e)
        self.run._tokens += 1
        self.step.stats["x"] = 1
"""
    assert {t for _, t in foreign_writes(bad)} == {
        "mon.rows.tokens",
        "obj._x",
        "ctx.extras['pre_clip']",
        "mon.a",
        "q.needs_elementwise",
        "ctx.side_rows.extend",
        "self.run._tokens",
        "self.step.stats['x']",
        "self.rows.events.append",
    }
    good = """
class C:
    def g(self, step):
        self.tokens = 1
        self.events.append(e)
        self.stats["x"] = 1
        step.add_stats(s)
        z = copy.copy(q)
        z.needs_elementwise = False
        z.__dict__.update(q.__dict__)
"""
    assert foreign_writes(good) == []


def test_no_class_writes_another_s_fields():
    root = Path(gradvar.__file__).parent
    found = {}
    for path in sorted(root.rglob("*.py")):
        module = path.relative_to(root).as_posix()
        for line, target in foreign_writes(path.read_text()):
            if (module, target) not in ALLOWED:
                found[f"{module}:{line}"] = target
    assert not found, found
    used = {(p.relative_to(root).as_posix(), t) for p in root.rglob("*.py") for _, t in foreign_writes(p.read_text())}
    assert set(ALLOWED) <= used, set(ALLOWED) - used  # an allowance no code needs any more goes
