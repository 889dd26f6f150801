"""POSIX record locks on host files, per FUSE lock owner.

A guest lock owner (one process's file table, as the kernel names it) gets its own open file
description of the host file, and its locks are open-file-description locks (F_OFD_*) on it:
locks of different owners conflict exactly as between host processes, and locks of one owner
merge and split as POSIX says. Host processes see them too. The table lock is only held to
find or add a descriptor, never across a blocking F_OFD_SETLKW.

A SETLKW is a loop of non-blocking F_OFD_SETLK attempts with a growing pause (1 ms up to
50 ms) rather than a blocking F_OFD_SETLKW: a blocked fcntl could not be ended by the
caller's INTERRUPT or by the share shutting down, and would keep its worker thread forever.
The kernel does not detect deadlocks between OFD locks, so a SETLKW cycle waits until one of
the callers is interrupted (the reference virtiofsd refuses SETLKW outright).
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import threading
from collections.abc import Callable

from vfsframe import ops, procfd

F_OFD_GETLK = 36
F_OFD_SETLK = 37
F_OFD_SETLKW = 38  # not used: see the module docstring
_FIRST_PAUSE = 0.001
_LONGEST_PAUSE = 0.05
# struct flock on x86_64 / aarch64: short l_type, short l_whence, off_t l_start, off_t l_len,
# pid_t l_pid, with padding.
_FLOCK = struct.Struct("hhqqi4x")
_OFFSET_MAX = (1 << 63) - 1


def _encode(lock: ops.Lock) -> bytes:
    # FUSE ranges are inclusive [start, end]; an end at OFFSET_MAX means "to the end" (0).
    length = 0 if lock.end >= _OFFSET_MAX else lock.end - lock.start + 1
    if length < 0:
        raise OSError(errno.EINVAL, "lock range ends before it starts")
    return _FLOCK.pack(lock.type, os.SEEK_SET, lock.start, length, 0)


class _Owners:
    """The lock descriptors of one host inode: lock owner → fd, and who holds the inode open."""

    __slots__ = ("fds", "open_handles", "pids")

    def __init__(self) -> None:
        self.fds: dict[int, int] = {}
        self.pids: dict[int, int] = {}
        self.open_handles = 0


class RecordLocks:
    def __init__(self) -> None:
        self._inodes: dict[tuple[int, int], _Owners] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()

    def close(self) -> None:
        """End every SETLKW wait (EINTR): the share is shutting down."""
        self._closing.set()

    def opened(self, key: tuple[int, int]) -> None:
        with self._lock:
            owners = self._inodes.get(key)
            if owners is None:
                owners = self._inodes[key] = _Owners()
            owners.open_handles += 1

    def closed(self, key: tuple[int, int]) -> None:
        """A handle of the inode was released; the last one drops every owner's locks."""
        with self._lock:
            owners = self._inodes.get(key)
            if owners is None:
                return
            owners.open_handles -= 1
            if owners.open_handles > 0:
                return
            del self._inodes[key]
        for fd in owners.fds.values():
            os.close(fd)

    def _owner_fd(self, key: tuple[int, int], owner: int, file_fd: int, pid: int) -> int:
        with self._lock:
            owners = self._inodes.get(key)
            if owners is None:
                raise OSError(errno.EBADF, "lock on a file that is not open")
            if pid:
                owners.pids[owner] = pid
            fd = owners.fds.get(owner)
            if fd is not None:
                return fd
            fd = _reopen(file_fd)
            owners.fds[owner] = fd
            return fd

    def getlk(self, key: tuple[int, int], owner: int, file_fd: int, lock: ops.Lock) -> ops.Lock:
        fd = self._owner_fd(key, owner, file_fd, 0)
        answer = fcntl.fcntl(fd, F_OFD_GETLK, _encode(lock))
        type_, _, start, length, _ = _FLOCK.unpack(answer)
        if type_ == fcntl.F_UNLCK:
            return ops.Lock(lock.start, lock.end, fcntl.F_UNLCK, 0)
        end = _OFFSET_MAX if length == 0 else start + length - 1
        return ops.Lock(start, end, type_, self._holder_pid(key, owner))

    def _holder_pid(self, key: tuple[int, int], owner: int) -> int:
        # OFD locks report no pid; name the other owner when there is only one candidate.
        with self._lock:
            owners = self._inodes.get(key)
            others = [pid for o, pid in owners.pids.items() if o != owner] if owners else []
        return others[0] if len(others) == 1 else 0

    def setlk(
        self,
        key: tuple[int, int],
        owner: int,
        file_fd: int,
        lock: ops.Lock,
        wait: bool,
        ctx: ops.Context | None = None,
    ) -> None:
        fd = self._owner_fd(key, owner, file_fd, lock.pid)
        request = _encode(lock)
        self.attempt(lambda: fcntl.fcntl(fd, F_OFD_SETLK, request), wait, ctx)

    def attempt(self, try_lock: Callable[[], object], wait: bool, ctx: ops.Context | None) -> None:
        """Call the non-blocking ``try_lock`` until it succeeds (SETLKW) or once (SETLK):
        EAGAIN on conflict, EINTR when the caller is interrupted or the share stops."""
        pause = _FIRST_PAUSE
        while True:
            try:
                try_lock()
                return
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if not wait:  # some file systems say EACCES for a conflict
                    raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN)) from None
            interrupt = ctx.interrupt if ctx is not None else None
            (interrupt or self._closing).wait(pause)
            if ctx is not None:
                ctx.check_interrupted()
            if self._closing.is_set():
                raise InterruptedError(errno.EINTR, "the share is shutting down")
            pause = min(pause * 2, _LONGEST_PAUSE)

    def release_owner(self, key: tuple[int, int], owner: int) -> None:
        """close(2) by a lock owner releases all its locks on the file (POSIX)."""
        with self._lock:
            owners = self._inodes.get(key)
            fd = owners.fds.get(owner) if owners else None
        if fd is not None:
            unlock = ops.Lock(0, _OFFSET_MAX, fcntl.F_UNLCK, 0)
            fcntl.fcntl(fd, F_OFD_SETLK, _encode(unlock))


def _reopen(fd: int) -> int:
    """A new open file description of the file ``fd`` is open on (read-write when the file
    allows it, so that both read and write locks can be taken)."""
    path = procfd.fd_path(fd)
    for flags in (os.O_RDWR, os.O_RDONLY, os.O_WRONLY):
        try:
            return os.open(path, flags | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EROFS, errno.EPERM, errno.ETXTBSY):
                raise
    raise OSError(errno.EACCES, "cannot open the file again for locking")
