"""The code's shape: the pipeline's import graph (trainer -> gradvar records -> analysis -> study reads them all,
never the other way), and the repository formatted and linted as pyproject.toml's ruff settings say.

Every module of every package is parsed, so an import inside a function counts as much as one at the top,
and so does a module named to `importlib.import_module` or to `gradvar.cli.lazy` (a command that a package
registers and runs later)."""

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gradvar", "trainer", "analysis", "study")
FORBIDDEN = {
    "gradvar": {"trainer", "analysis", "study"},
    "trainer": {"study"},
    "analysis": {"study"},
}
"""Which first-party packages each package must not import: the library is usable alone, one run and the
reading of any run or log know nothing of the study."""
DYNAMIC = {"import_module", "lazy", "__import__"}
"""Calls whose first argument, a string constant, names a module that is imported when they run."""


def sources(pkg: str) -> list[Path]:
    return sorted((ROOT / pkg).rglob("*.py"))


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, root: Path = ROOT) -> set[str]:
    """Every absolute module name `path` imports, wherever in the file (relative imports resolved)."""
    here = module_name(path, root).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            mod = ".".join([*base, *([node.module] if node.module else [])])
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)  # `from pkg import module`
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            fn = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            if fn in DYNAMIC and isinstance(node.args[0].value, str):
                out.add(node.args[0].value.partition(":")[0])
    return out


def test_the_packages_are_found():
    names = {p.relative_to(ROOT).as_posix() for pkg in PACKAGES for p in sources(pkg)}
    assert {"gradvar/monitor.py", "trainer/train.py", "analysis/report/report.py", "study/cli.py"} <= names


def test_imports_follow_the_pipeline():
    bad = []
    for pkg, forbidden in FORBIDDEN.items():
        for path in sources(pkg):
            for mod in sorted(imported(path)):
                if mod.split(".")[0] in forbidden:
                    bad.append(f"{path.relative_to(ROOT).as_posix()} imports {mod}")
    assert not bad, "\n".join(bad)


def test_the_import_reader_sees_every_form(tmp_path):
    """The guard above is only as good as `imported`: each way of importing a module is seen."""
    pkg = tmp_path / "analysis" / "sub"
    pkg.mkdir(parents=True)
    src = pkg / "mod.py"
    src.write_text(
        "import study.a\n"
        "from study import b\n"
        "from ...study.c import d\n"
        "def f():\n"
        "    from .. import study as e\n"
        "    importlib.import_module('study.g')\n"
        "    return lazy('study.h:main')\n"
    )
    got = imported(src, tmp_path)
    assert {"study.a", "study.b", "study.c.d", "analysis.study", "study.g", "study.h"} <= got


def private_torch(path: Path) -> set[str]:
    """The `torch.…._name` attribute chains `path` reads (private by their leading underscore)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        chain = []
        while isinstance(node, ast.Attribute):
            chain.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name) and node.id == "torch" and any(_private(a) for a in chain):
            out.add(".".join(["torch", *reversed(chain)]))
    return out


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_private_torch_apis_go_through_the_checked_module():
    """gradvar/_torch_compat.py checks at import every private torch API it wraps; a private API read anywhere
    else would fail inside a hook, or silently, on the torch release that drops it."""
    found = {
        f"{p.relative_to(ROOT).as_posix()}: {name}"
        for pkg in PACKAGES
        for p in sources(pkg)
        if p.name != "_torch_compat.py"
        for name in private_torch(p)
    }
    assert not found, sorted(found)


@pytest.mark.skipif(importlib.util.find_spec("ruff") is None, reason="ruff is not installed (pip install -e .[test])")
@pytest.mark.parametrize("args", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff_passes(args):
    res = subprocess.run(
        [sys.executable, "-m", "ruff", *args, "--no-cache", "."], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
