"""Child processes that do not outlive their parent."""

from __future__ import annotations

import ctypes
import signal
import sys

# loaded in the parent: the child, between fork and exec, must not import anything
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """A `preexec_fn`: Linux sends the child SIGTERM when the process that started it dies, even of SIGKILL.

    `lsal run`'s children and the embedded LLM server (2 GB for the 1.5B model) each run in a session of
    their own, which a signal to `lsal run`'s process group does not reach; this is what still ends them.
    """
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
