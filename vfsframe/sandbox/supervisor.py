"""The process that stays outside the PID namespace.

A new PID namespace applies to the children of the process that makes it, so `vfsframe
serve` forks: the child is PID 1 of the namespace and serves; the parent forwards SIGINT
and SIGTERM to it, waits, removes the sockets the child can no longer reach, and exits with
the child's status (a child killed by a signal, e.g. seccomp's SIGSYS, exits 128+N as a
shell reports it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Iterable
from pathlib import Path

from . import libc

log = logging.getLogger("vfsframe.sandbox")


def fork_into_pid_namespace() -> int:
    """Fork into a new PID namespace: returns 0 in the child (PID 1 there) and the child's
    pid in the parent."""
    libc.unshare(libc.CLONE_NEWPID)
    pid = os.fork()
    if pid == 0:
        # The supervisor going away (SIGKILL) must not leave a server behind.
        libc.prctl(libc.PR_SET_PDEATHSIG, signal.SIGKILL)
    return pid


def supervise(child: int, stop_signals: set[signal.Signals], sockets: Iterable[Path]) -> int:
    """Forward ``stop_signals`` (blocked by the caller) to ``child`` until it exits; then
    remove ``sockets`` and return its exit status."""
    while True:
        received = signal.sigtimedwait(stop_signals, 0.2)
        if received is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, received.si_signo)
        pid, status = os.waitpid(child, os.WNOHANG)
        if pid == child:
            break
    for path in sockets:
        with contextlib.suppress(FileNotFoundError):
            if path.is_socket():
                path.unlink()
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        log.error("the sandboxed server was killed by %s", signal.Signals(-code).name)
        return 128 - code
    return code
