"""Ctrl-C that always stops a training run.

Python raises KeyboardInterrupt once per SIGINT, at the next bytecode the main thread runs. When that
bytecode belongs to a finalizer (a `__del__`, a weakref callback, run by the garbage collector in
the middle of a training step), the exception is printed as "ignored" and lost, and an encode of
many epochs goes on as if nothing had been asked. So the command line's handler also remembers the
request, and the training loop raises it again at its next step.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

_requested = threading.Event()


def _on_sigint(signum: int, frame: FrameType | None) -> None:  # noqa: ARG001
    _requested.set()
    raise KeyboardInterrupt


def install() -> None:
    """Handle Ctrl-C this way from now on (the command line's main thread)."""
    signal.signal(signal.SIGINT, _on_sigint)


def raise_if_requested() -> None:
    """Raise KeyboardInterrupt when Ctrl-C was pressed, even if its first one was lost."""
    if _requested.is_set():
        raise KeyboardInterrupt
