"""Child processes that die with the process that started them, even when it is killed
(``kill -9``, an orchestrator's or a CI run's timeout) and has no chance to stop them: the kernel
sends them SIGKILL (``PR_SET_PDEATHSIG``).  The workers of ``filesvc serve --workers N``, so that
none goes on serving the port without its supervisor; the thumbnail workers, so that none renders
on with no server left to enforce its time limit; and the servers tests and benchmarks start
(SeaweedFS, PostgreSQL, ``filesvc serve``), so that none outlives a killed run.

The kernel sends the signal when the *thread* that started the child ends, not the process:
start a server from a thread that outlives it (the main thread, or a worker thread of the
event loop's executor, which lives until the loop closes).
"""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Callable

# <linux/prctl.h>
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> Callable[[], None]:
    """A ``preexec_fn`` for :class:`subprocess.Popen`: the child gets SIGKILL when this process
    dies.  It runs in the child after any change of user (``Popen(user=...)``), which would
    clear the setting, and just before exec, which keeps it."""
    parent = os.getpid()
    libc = ctypes.CDLL(None, use_errno=True)

    def arm() -> None:
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        # The parent may have died between fork and prctl: then no signal will ever come.
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)

    return arm
