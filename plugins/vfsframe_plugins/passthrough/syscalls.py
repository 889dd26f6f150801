"""The Linux system calls Python's ``os`` module lacks, through ctypes (openat2, the hot one,
from a small C module when it is built).

Each wrapper raises ``OSError`` with the host errno, like ``os`` functions do. Numbers are
for x86_64 and aarch64 (the generic table), the two hosts vfsframe runs on.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

_SYSCALLS = {
    "x86_64": {"openat2": 437, "fchmodat2": 452, "renameat2": 316},
    "aarch64": {"openat2": 437, "fchmodat2": 452, "renameat2": 276},
}
_NR = _SYSCALLS.get(platform.machine(), _SYSCALLS["x86_64"])

# openat2(2) resolve flags.
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08

AT_SYMLINK_NOFOLLOW = 0x100
AT_EMPTY_PATH = 0x1000
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2
CLONE_FS = 0x200

_libc.syscall.restype = ctypes.c_long
_libc.setfsuid.argtypes = [ctypes.c_uint]
_libc.setfsgid.argtypes = [ctypes.c_uint]
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
_libc.syncfs.argtypes = [ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]


class OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


class Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _check(result: int, what: str, path: bytes | None = None) -> int:
    if result < 0:
        code = ctypes.get_errno()
        if path is None:
            raise OSError(code, os.strerror(code))
        raise OSError(code, os.strerror(code), os.fsdecode(path))
    return result


def ctypes_openat2(dirfd: int, path: bytes, flags: int, mode: int, resolve: int) -> int:
    """openat2(2): ``path`` resolved from ``dirfd`` under the ``resolve`` restrictions."""
    how = OpenHow(flags, mode, resolve)
    fd = _libc.syscall(
        ctypes.c_long(_NR["openat2"]),
        ctypes.c_int(dirfd),
        ctypes.c_char_p(path),
        ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
    )
    return _check(fd, "openat2", path)


try:  # the same call from C: no ctypes objects built on every path the backend resolves
    from ._openat2 import openat2
except ImportError:  # not built
    openat2 = ctypes_openat2


def fchmodat2(dirfd: int, name: bytes, mode: int, flags: int) -> None:
    """fchmodat2(2) (Linux 6.6): unlike fchmodat it honours AT_SYMLINK_NOFOLLOW."""
    result = _libc.syscall(
        ctypes.c_long(_NR["fchmodat2"]),
        ctypes.c_int(dirfd),
        ctypes.c_char_p(name),
        ctypes.c_uint(mode),
        ctypes.c_uint(flags),
    )
    _check(result, "fchmodat2", name)


def renameat2(olddirfd: int, old: bytes, newdirfd: int, new: bytes, flags: int) -> None:
    result = _libc.syscall(
        ctypes.c_long(_NR["renameat2"]),
        ctypes.c_int(olddirfd),
        ctypes.c_char_p(old),
        ctypes.c_int(newdirfd),
        ctypes.c_char_p(new),
        ctypes.c_uint(flags),
    )
    _check(result, "renameat2", old)


def _timespec(ns: int | None) -> Timespec:
    """None: leave the time alone; -1 (ops.UTIME_NOW): now; else nanoseconds since the epoch."""
    if ns is None:
        return Timespec(0, UTIME_OMIT)
    if ns == -1:
        return Timespec(0, UTIME_NOW)
    seconds, nanoseconds = divmod(ns, 1_000_000_000)
    return Timespec(seconds, nanoseconds)


def utimensat(dirfd: int, name: bytes | None, atime_ns: int | None, mtime_ns: int | None,
              flags: int) -> None:  # fmt: skip
    """utimensat(2) with atime and mtime set independently (UTIME_OMIT / UTIME_NOW)."""
    times = (Timespec * 2)(_timespec(atime_ns), _timespec(mtime_ns))
    result = _libc.utimensat(ctypes.c_int(dirfd), ctypes.c_char_p(name), times, ctypes.c_int(flags))
    _check(result, "utimensat", name)


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    _check(_libc.fallocate(fd, mode, offset, length), "fallocate")


def syncfs(fd: int) -> None:
    _check(_libc.syncfs(fd), "syncfs")


def setfsuid(uid: int) -> int:
    """The calling thread's filesystem uid (per thread on Linux); returns the previous one."""
    return int(_libc.setfsuid(uid))


def setfsgid(gid: int) -> int:
    return int(_libc.setfsgid(gid))


def unshare_fs() -> None:
    """Give the calling thread its own umask and cwd (CLONE_FS), so that setting its umask
    does not race with other threads."""
    _check(_libc.unshare(CLONE_FS), "unshare")


def futimens(fd: int, atime_ns: int | None, mtime_ns: int | None) -> None:
    times = (Timespec * 2)(_timespec(atime_ns), _timespec(mtime_ns))
    _check(_libc.futimens(ctypes.c_int(fd), times), "futimens")
