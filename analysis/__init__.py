"""analysis: read gradvar records and users' logs from disk and turn them into findings, figures and reports.

    import analysis
    run = analysis.load_run("runs/my_run")            # tidy DataFrames with the run's metadata joined in
    result = analysis.diagnose("my_log.csv")           # spikes, leading signals, advice (also for HF logs)
    analysis.write_report(["runs/a", "runs/b"], "reports/mine")

Subpackages: `logs` reads training logs (CSV, JSON, TensorBoard, W&B, stdout), `records` analyses gradvar
records (metrics, correlations, early warning, sequence length, method comparison), `diagnosis` diagnoses one
log, `report` writes the reports. `errors` holds the errors they raise.
"""

import importlib
from typing import TYPE_CHECKING

# Names are bound on first use: `import analysis` (and `gradvar report --help`) imports no pandas, scipy or
# matplotlib until a function is called.
_EXPORTS = {
    "diagnose": "diagnosis",
    "load_run": "records.load",
    "load_runs": "records.load",
    "load_log": "logs",
    "write_report": "report.report",
}
_SUBMODULES = ("diagnosis", "errors", "logs", "records", "report")

__all__ = ["diagnose", "load_log", "load_run", "load_runs", "write_report"]

if TYPE_CHECKING:  # what type checkers and editors see; at run time __getattr__ binds the same names
    from .diagnosis import diagnose
    from .logs import load_log
    from .records.load import load_run, load_runs
    from .report.report import write_report


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"analysis.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"analysis.{name}")
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_EXPORTS, *_SUBMODULES])
