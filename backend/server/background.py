"""Work off the request path, in the order it was asked for."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class SerialRunner:
    """Runs callables one after another on one daemon thread (started lazily, so after a fork).

    /setup hands its Redis writes here: LS gives it 3 seconds, and a re-bound project's state must be
    forgotten before the new project's LS access is recorded, never after.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._work: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, work: Callable[[], None]) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
        self._work.put(work)

    def _run(self) -> None:
        while True:
            work = self._work.get()
            try:
                work()
            except Exception:  # one failed write must not stop the ones after it
                log.exception("background work failed in %s", self.name)
