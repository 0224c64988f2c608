"""analysis: read gradvar records from disk and turn them into findings, figures and reports.

import analysis
run = analysis.load_run("runs/my_run")            # tidy DataFrames with the run's metadata joined in
result = analysis.diagnose("my_log.csv")           # spikes, leading signals, advice (also for HF logs)
analysis.write_report(["runs/a", "runs/b"], "reports/mine")
"""

import importlib

# Eager, because the function shares its name with its module: bound here, it is what analysis.diagnose means.
from .diagnose import diagnose  # noqa: E402

_EXPORTS = {
    "load_run": "load",
    "load_runs": "load",
    "load_log": "logs",
    "write_report": "report",
    "write_study_report": "study_report",
}


def __getattr__(name):
    # Lazy: importing analysis should not pull in matplotlib and scipy until they are needed.
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"analysis.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")


__all__ = ["diagnose", *_EXPORTS]
