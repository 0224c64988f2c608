"""gradvar: record gradient variance, Adam variance-state extremes and loss spikes per sequence length.

    mon = gradvar.Monitor(model, optimizer, "runs/my_run", quantities="paper")
    ...  # loss.backward(); optimizer.step()
    mon.step(loss=loss)
    mon.close()
    tables = gradvar.read_records("runs/my_run")   # {"steps": DataFrame, "layers": ..., ...}
"""
from .monitor import Monitor
from .records import RecordsWriteError, read_records
from .schema import SCHEMA_VERSION
from .slw import SLWSchedule, truncate
from .spikes import SpikeRule, classify_run, loss_ratio, ratio_spikes, spike_events, z_spikes

__version__ = "0.1.0"

__all__ = [
    "Monitor", "RecordsWriteError", "SCHEMA_VERSION", "SLWSchedule", "SpikeRule", "classify_run", "loss_ratio",
    "ratio_spikes", "read_records", "spike_events", "truncate", "z_spikes",
]


def __getattr__(name):
    # `gradvar.integrations.hf` without importing transformers on `import gradvar`
    if name == "integrations":
        import importlib

        return importlib.import_module("gradvar.integrations")
    raise AttributeError(f"module 'gradvar' has no attribute {name!r}")
