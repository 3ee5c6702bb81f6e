"""SIGINT/SIGTERM -> Interrupted, except while the harness is restoring hosts.

A signal during a trial raises Interrupted at once, so the trial's `finally`
stops its processes. A signal during cleanup (stopping servers, restoring
settings) only sets a flag: cleanup must finish, and the run ends after it.
Ansible runs are never interrupted by an exception; their cancel callback
reads `requested` instead.
"""

from __future__ import annotations

import signal
from contextlib import contextmanager

from harness.errors import Interrupted


class StopSignals:
    def __init__(self):
        self.requested: str | None = None  # the signal's name once one arrived
        self._deferring = 0
        self._previous = {}

    def __enter__(self) -> StopSignals:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum, frame) -> None:
        self.requested = signal.Signals(signum).name
        if not self._deferring:
            raise Interrupted(f"{self.requested} received: the run stopped; hosts were restored")

    @contextmanager
    def deferred(self):
        """Hold signals off until the block ends (cleanup that must complete)."""
        self._deferring += 1
        try:
            yield
        finally:
            self._deferring -= 1

    def check(self) -> None:
        """Raise Interrupted if a signal arrived while deferred."""
        if self.requested and not self._deferring:
            raise Interrupted(f"{self.requested} received: the run stopped; hosts were restored")

    def cancel_requested(self) -> bool:
        """For ansible-runner's cancel_callback."""
        return self.requested is not None


class NoSignals(StopSignals):
    """For library use and tests: nothing installed, never interrupted."""

    def __enter__(self) -> NoSignals:
        return self

    def __exit__(self, *exc) -> None:
        pass
