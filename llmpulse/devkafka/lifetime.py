"""Child processes that die with the process that started them.

``llmpulse demo`` starts a broker and a worker in their own sessions (a Ctrl-C
meant for the demo must not hit them half-way: the demo stops them in order).
When the demo itself dies abnormally (SIGKILL, a crash, its output pipe closed
and the error handling failed), nothing would stop them, and the next demo
collides on their ports. On Linux, ``prctl(PR_SET_PDEATHSIG, SIGTERM)`` asks
the kernel to send SIGTERM to the child when its parent dies; both the broker
(a JVM: SIGTERM runs its shutdown hooks) and the worker shut down cleanly on
it. Elsewhere :func:`die_with_parent` returns None and children are only
stopped by the demo's own cleanup.

Two caveats, handled or documented here:

* the signal is tied to the *thread* that forked the child: start children from
  a thread that lives as long as the parent (the demo uses its main thread);
* the parent may die between ``fork`` and ``prctl``: the child then already
  has another parent, checks for it, and stops itself.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
from collections.abc import Callable
from typing import Final

__all__ = ["PR_SET_PDEATHSIG", "die_with_parent"]

PR_SET_PDEATHSIG: Final = 1  # <linux/prctl.h>


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` for ``subprocess.Popen`` that makes the child receive ``sig``
    when this process dies; None where the kernel offers no such thing."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    parent = os.getpid()

    def preexec() -> None:
        # Runs in the child between fork and exec: async-signal-safe calls only.
        if libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
            return  # not fatal: the demo's cleanup still stops the child
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)

    return preexec
