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

from . import libc, seccomp

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
    kmsg = _open_kernel_log()
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
    if code == -signal.SIGSYS:
        name = seccomp.find_logged_syscall(kmsg, child) if kmsg is not None else None
        log.error(
            "the sandboxed server was killed by SIGSYS: system call %s is not in the "
            "seccomp allow-list (vfsframe/sandbox/syscalls.py; --seccomp log names every one)",
            name or "(unknown: the kernel log was not readable)",
        )
    elif code < 0:
        log.error("the sandboxed server was killed by %s", signal.Signals(-code).name)
    if kmsg is not None:
        os.close(kmsg)
    return 128 - code if code < 0 else code


def _open_kernel_log() -> int | None:
    """/dev/kmsg from now on, to name the call if seccomp kills the child."""
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    os.lseek(fd, 0, os.SEEK_END)
    return fd
