"""Integrations with other training loops (imported on first use)."""


def __getattr__(name):
    if name == "hf":
        import importlib

        return importlib.import_module("gradvar.integrations.hf")
    raise AttributeError(f"module 'gradvar.integrations' has no attribute {name!r}")
