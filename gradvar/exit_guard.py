"""What keeps the records when a process ends early: SIGTERM (schedulers send it before killing) and the
interpreter's exit (an uncaught exception, a plain `sys.exit`)."""

from __future__ import annotations

import atexit
import contextlib
import signal
import threading
import weakref


class ExitGuard:
    """Installs the SIGTERM handler (main thread only) and, in one process, an exit-time flush."""

    def __init__(self, monitor, handle_sigterm: bool):
        self.stop_requested = False
        """True once SIGTERM arrived (the loop checkpoints and exits at the next step boundary)."""
        self._monitor = monitor
        self._distributed = monitor.world_size > 1
        self._prev = None
        if handle_sigterm and threading.current_thread() is threading.main_thread():
            self._prev = signal.signal(signal.SIGTERM, self._on_sigterm)
        if not self._distributed:
            atexit.register(_flush_at_exit, weakref.ref(monitor))

    def _on_sigterm(self, signum, frame):
        """Keep every record, then behave as the handler this one replaced."""
        self.stop_requested = True
        if self._distributed:
            return  # flushing is collective: it happens at the next step boundary
        if self._monitor is not None:
            self._monitor.log_event("preempt", "SIGTERM received: records flushed")
            self._monitor.flush()
        prev = self._prev
        if callable(prev):
            prev(signum, frame)
        elif prev in (signal.SIG_DFL, None):
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.raise_signal(signal.SIGTERM)

    def restore(self) -> None:
        """Put the replaced SIGTERM handler back (Monitor.close)."""
        if self._prev is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._prev)
        self._monitor = None


def _flush_at_exit(ref) -> None:
    mon = ref()
    if mon is not None and not mon._closed:
        with contextlib.suppress(Exception):  # the interpreter is going down: never mask the original error
            mon.flush()
