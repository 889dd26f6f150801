"""Dropping every capability the shares do not need, and setting no_new_privs.

Capabilities are per thread: the drop must happen before the server starts its threads, and
the sandbox refuses to enter while another thread runs (``refuse_other_threads``). The
bounding set is emptied of the rest too, so not even an exec could get them back, and
no_new_privs stops setuid binaries and file capabilities.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Iterable

from . import libc

# <linux/capability.h>, in number order.
CAPABILITY_NAMES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)  # fmt: skip
CAPABILITY_NUMBERS = {name: number for number, name in enumerate(CAPABILITY_NAMES)}


def last_capability() -> int:
    """The highest capability number this kernel knows."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return len(CAPABILITY_NAMES) - 1


def mask_of(names: Iterable[str]) -> int:
    """The bit mask of capability names (``KeyError`` for an unknown one)."""
    mask = 0
    for name in names:
        mask |= 1 << CAPABILITY_NUMBERS[name]
    return mask


def names_of(mask: int) -> list[str]:
    return [name for number, name in enumerate(CAPABILITY_NAMES) if mask >> number & 1]


def drop_all_but(kept: Iterable[str]) -> None:
    """Keep only ``kept`` in this thread's effective, permitted and bounding sets; clear the
    inheritable and ambient sets."""
    keep = mask_of(kept)
    for number in range(last_capability() + 1):
        if not keep >> number & 1:
            try:
                libc.prctl(libc.PR_CAPBSET_DROP, number)
            except OSError as exc:
                if exc.errno == errno.EPERM:  # no CAP_SETPCAP (not root): none to drop
                    break
                if exc.errno != errno.EINVAL:  # EINVAL: unknown to this kernel
                    raise
    libc.prctl(libc.PR_CAP_AMBIENT, libc.PR_CAP_AMBIENT_CLEAR_ALL)
    _, permitted, _ = libc.capget()
    libc.capset(keep & permitted, keep & permitted, 0)


def set_no_new_privs() -> None:
    libc.prctl(libc.PR_SET_NO_NEW_PRIVS, 1)


class ThreadsBeforeSandbox(ValueError):
    """A plugin started a thread while it was built: the thread would keep every capability."""


def other_threads() -> list[str]:
    """Threads other than this one: they would keep the capabilities this one drops. The
    kernel's count (/proc/self/task) includes threads a C library started, which Python's
    list does not; those are named by number."""
    me = threading.current_thread()
    named = [t.name for t in threading.enumerate() if t is not me and t.is_alive()]
    try:
        unnamed = len(os.listdir("/proc/self/task")) - 1 - len(named)
    except OSError:  # no /proc: Python's own list is all there is
        unnamed = 0
    return named + [f"a thread not started by Python ({n + 1})" for n in range(max(unnamed, 0))]


def refuse_other_threads() -> None:
    """Raise ThreadsBeforeSandbox if a thread other than this one runs."""
    others = other_threads()
    if others:
        raise ThreadsBeforeSandbox(
            f"thread(s) started while the shares were built ({', '.join(others)}) would keep "
            "every capability the sandbox drops; a plugin starts its threads in start(), "
            "which runs once serving begins"
        )
