"""The syscall filter: libseccomp (Debian's libseccomp2) through small ctypes wrappers.

``install_filter`` loads an allow-list for every thread of the process (TSYNC). The default
action is SECCOMP_RET_KILL_PROCESS ("kill") or SECCOMP_RET_LOG ("log": the call goes ahead
and the kernel logs it; ``KernelLogWatcher`` turns those lines into warnings that name the
system call).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import logging
import os
import re
import threading
import time
from collections.abc import Iterable

log = logging.getLogger("vfsframe.sandbox")

SCMP_ACT_KILL_PROCESS = 0x80000000
SCMP_ACT_LOG = 0x7FFC0000
SCMP_ACT_ALLOW = 0x7FFF0000
_SCMP_FLTATR_CTL_NNP = 3
_SCMP_FLTATR_CTL_TSYNC = 4
_SCMP_FLTATR_CTL_OPTIMIZE = 8  # libseccomp >= 2.5; 2 = a binary tree of syscall numbers
_SCMP_CMP_EQ = 4
_SCMP_ARCH_NATIVE = 0

# Calls allowed only with some first arguments. A new user namespace would hand back every
# capability, so no namespace may be made: unshare only for a thread's own fs_struct
# (CLONE_FS), clone only without namespace flags. clone3 passes its flags in memory a filter
# cannot read: it fails with ENOSYS and the C library falls back to clone (as Docker does).
CLONE_FS = 0x200
NAMESPACE_FLAGS = 0x7E020000  # CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET
_SCMP_CMP_MASKED_EQ = 7
ARGUMENT_RULES = {
    "unshare": (_SCMP_CMP_EQ, CLONE_FS, 0),
    "clone": (_SCMP_CMP_MASKED_EQ, NAMESPACE_FLAGS, 0),
}
REFUSED = {"clone3": errno.ENOSYS}
_SCMP_ACT_ERRNO = 0x00050000


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


def load_library() -> None:
    """Load libseccomp now (OSError naming the package if it is missing)."""
    _lib()


@functools.cache
def _lib() -> ctypes.CDLL:
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError as exc:
        raise OSError(
            errno.ENOENT, f"libseccomp is not installed ({exc}); apt-get install libseccomp2"
        ) from None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
    lib.seccomp_rule_add_exact_array.argtypes = [
        ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(_ArgCmp),
    ]  # fmt: skip
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_syscall_resolve_num_arch.restype = ctypes.c_void_p  # malloc'd char *
    lib.seccomp_syscall_resolve_num_arch.argtypes = [ctypes.c_uint32, ctypes.c_int]
    return lib


def syscall_number(name: str) -> int | None:
    """The native number of a system call name, or None if this architecture lacks it."""
    number = _lib().seccomp_syscall_resolve_name(name.encode())
    return number if number >= 0 else None


def syscall_name(number: int) -> str:
    pointer = _lib().seccomp_syscall_resolve_num_arch(_SCMP_ARCH_NATIVE, number)
    if not pointer:
        return f"syscall#{number}"
    try:
        return ctypes.string_at(pointer).decode()
    finally:
        ctypes.CDLL(None).free(ctypes.c_void_p(pointer))


def _call(result: int, what: str) -> None:
    if result < 0:  # libseccomp returns -errno
        raise OSError(-result, f"seccomp {what}: {os.strerror(-result)}")


def install_filter(allowed: Iterable[str], mode: str) -> int:
    """Load the allow-list into every thread; returns how many calls it allows."""
    lib = _lib()
    default = SCMP_ACT_KILL_PROCESS if mode == "kill" else SCMP_ACT_LOG
    ctx = lib.seccomp_init(default)
    if not ctx:
        raise OSError(errno.EINVAL, "seccomp_init failed")
    try:
        _call(lib.seccomp_attr_set(ctx, _SCMP_FLTATR_CTL_TSYNC, 1), "TSYNC")
        _call(lib.seccomp_attr_set(ctx, _SCMP_FLTATR_CTL_NNP, 1), "NNP")
        # Every system call runs the filter: a binary search over ~150 numbers instead of a
        # linear scan (libseccomp's default), which cost ~6% of the server's CPU per request.
        if lib.seccomp_attr_set(ctx, _SCMP_FLTATR_CTL_OPTIMIZE, 2) != 0:
            log.info("libseccomp cannot build a binary-tree filter; using a linear one")
        count = 0
        for name in sorted(set(allowed)):
            number = syscall_number(name)
            if number is None:
                continue  # not on this architecture (e.g. a legacy call)
            if name in REFUSED:
                action = _SCMP_ACT_ERRNO | REFUSED[name]
                rc = lib.seccomp_rule_add_exact_array(ctx, action, number, 0, None)
            elif name in ARGUMENT_RULES:
                cmp = _ArgCmp(0, *ARGUMENT_RULES[name])
                rc = lib.seccomp_rule_add_exact_array(ctx, SCMP_ACT_ALLOW, number, 1, cmp)
            else:
                rc = lib.seccomp_rule_add_exact_array(ctx, SCMP_ACT_ALLOW, number, 0, None)
            _call(rc, f"allowing {name}")
            count += 1
        _call(lib.seccomp_load(ctx), "load")
        return count
    finally:
        lib.seccomp_release(ctx)


_AUDIT_SECCOMP = re.compile(r"type=1326 .*?\bpid=(\d+)\b.*?\bsyscall=(\d+)\b")


def find_logged_syscall(kmsg_fd: int, pid: int, wait: float = 3.0) -> str | None:
    """The name of the system call the kernel logged seccomp acting on for ``pid``, read
    from a non-blocking /dev/kmsg descriptor (the audit thread prints it a moment later)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            record = os.read(kmsg_fd, 8192).decode(errors="replace")
        except BlockingIOError:
            time.sleep(0.05)
            continue
        except OSError as exc:
            if exc.errno == errno.EPIPE:
                continue
            return None
        match = _AUDIT_SECCOMP.search(record)
        if match and int(match.group(1)) == pid:
            return syscall_name(int(match.group(2)))
    return None


class KernelLogWatcher:
    """Reports the kernel's seccomp log lines (SECCOMP_RET_LOG) for one process, naming the
    system call. /dev/kmsg is opened before the sandbox is entered; reading it needs no
    privilege afterwards."""

    def __init__(self, pid: int = 0) -> None:
        self.pid = pid  # set before start() when not known yet (a child to be forked)
        self._fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_CLOEXEC)
        os.lseek(self._fd, 0, os.SEEK_END)  # only what happens from now on
        self.reported: set[str] = set()

    def start(self) -> None:
        threading.Thread(target=self._watch, name="seccomp-log", daemon=True).start()

    def _watch(self) -> None:
        while True:
            try:
                record = os.read(self._fd, 8192).decode(errors="replace")
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # overwritten records: go on from the next
                    continue
                log.warning("seccomp log: reading /dev/kmsg failed: %s", exc)
                return
            match = _AUDIT_SECCOMP.search(record)
            if match and int(match.group(1)) == self.pid:
                name = syscall_name(int(match.group(2)))
                if name in self.reported:  # once each: a loop must not flood the log
                    continue
                self.reported.add(name)
                log.warning(
                    "seccomp: system call %s (%s) is not in the allow-list; "
                    'seccomp = "log" let it through, "kill" would end the server',
                    name,
                    match.group(2),
                )
