"""File-safety primitives the records use, public for code that writes beside them (a trainer's config,
summary and checkpoints):

    gradvar.io.atomic_write_text(run_dir / "summary.json", text)   # temp name, fsync, rename, fsync the folder
    gradvar.io.fsync_dir(folder)                                   # after renaming files into it
    gradvar.io.fault_point("checkpoint_write")                     # a kill point for crash tests, else a no-op

`fault_point(name)` does nothing unless the environment variable GRADVAR_FAULT is "<name>@<n>": then the n-th
time the process reaches that point it prints "GRADVAR_FAULT <name> reached" to stderr and sleeps
GRADVAR_FAULT_SLEEP seconds (default 60), so a test can SIGKILL it exactly there (see docs/fault-tolerance.md).
"""

from .records import atomic_write_text, fault_point, fsync_dir

__all__ = ["atomic_write_text", "fault_point", "fsync_dir"]
