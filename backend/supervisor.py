"""`lsal run`'s process manager: keeps the server and the worker up, each apart from the other.

A child that exits is started again after a back-off (1 s, doubling to `max_delay`, reset once it has
stayed up for `healthy_after` seconds), with a log line for each exit and restart. One child's death
never stops another: the HTTP server answers /predict from memory, whatever the worker is doing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from backend.childprocess import die_with_parent

log = logging.getLogger("lsal")


@dataclass
class Backoff:
    """Delays between restarts of one child. Pure: the caller says what time it is."""

    initial: float = 1.0
    max_delay: float = 30.0
    healthy_after: float = 60.0
    delay: float = field(init=False, default=0.0)

    def next_delay(self, ran_for: float) -> float:
        """The wait before the next start of a child that just exited after running `ran_for` seconds."""
        if ran_for >= self.healthy_after or self.delay == 0.0:
            self.delay = self.initial
        else:
            self.delay = min(self.delay * 2, self.max_delay)
        return self.delay


@dataclass
class Child:
    name: str
    command: Sequence[str]
    backoff: Backoff = field(default_factory=Backoff)
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_at: float | None = None
    restarts: int = 0


class Supervisor:
    def __init__(
        self, children: Sequence[Child], env: Mapping[str, str], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.children = list(children)
        self.env = dict(env)
        self.clock = clock
        self.stopping = False

    def start(self, child: Child) -> None:
        # a session of its own, so that what it leaves behind when it dies can be cleaned up with it
        child.process = subprocess.Popen(list(child.command), env=self.env, start_new_session=True,
                                         preexec_fn=die_with_parent)  # fmt: skip
        child.started_at = self.clock()
        child.restart_at = None
        log.info("%s started (pid %s)", child.name, child.process.pid)

    def check(self) -> None:
        """One round: note children that exited, start those whose back-off has passed."""
        now = self.clock()
        for child in self.children:
            if child.process is not None and child.process.poll() is not None and child.restart_at is None:
                _kill_group(child.process.pid)
                delay = child.backoff.next_delay(now - child.started_at)
                child.restart_at = now + delay
                child.restarts += 1
                log.error("%s (pid %s) exited with status %s; restart %d in %.0f s", child.name, child.process.pid,
                          child.process.returncode, child.restarts, delay)  # fmt: skip
            if not self.stopping and child.restart_at is not None and now >= child.restart_at:
                self.start(child)

    def run(self, interval: float = 0.5) -> None:
        for child in self.children:
            self.start(child)
        while not self.stopping:
            self.check()
            time.sleep(interval)

    def stop(self, timeout: float = 20.0) -> None:
        self.stopping = True
        running = [c.process for c in self.children if c.process is not None and c.process.poll() is None]
        for process in running:
            process.terminate()
        deadline = time.monotonic() + timeout
        for process in running:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            _kill_group(process.pid)


def _kill_group(pgid: int) -> None:
    """Kill what a child left in its process group. A worker killed outright (OOM, SIGKILL) leaves its rq
    scheduler running, and that process holds the dead worker's Redis socket open: Redis then still
    counts the dead worker's blocking pop as waiting and hands it the next job, which nobody runs."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
