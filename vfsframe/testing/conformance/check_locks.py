"""Locks between processes, through the mount (a lock's owner is a process)."""

from __future__ import annotations

import errno
import fcntl
import os
import subprocess
import sys

from vfsframe import ops
from vfsframe.testing.conformance.drivers import ChainDriver, ChainHandle, Driver, write_file
from vfsframe.testing.conformance.errors import expect_errno
from vfsframe.testing.conformance.marks import only_in_process, only_mounted, requires

# Exit status 0: the lock was granted; 1: it conflicted (EAGAIN/EACCES/EWOULDBLOCK).
_TRY_LOCK = """
import fcntl, sys
kind, path = sys.argv[1], sys.argv[2]
with open(path, "r+b") as f:
    try:
        if kind == "posix":
            fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB, 50, 100)  # bytes 100..149
        else:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        sys.exit(1)
    except PermissionError:
        sys.exit(1)
"""


def _other_process_gets(kind: str, path: str) -> bool:
    done = subprocess.run([sys.executable, "-c", _TRY_LOCK, kind, path], capture_output=True)
    assert done.returncode in (0, 1), done.stderr.decode()
    return done.returncode == 0


class LockChecks:
    @requires("writable", "posix_locks")
    @only_mounted("a lock's owner is a process; the conflict is between two of them")
    def test_posix_locks_between_processes(self, vfs: Driver) -> None:
        write_file(vfs, "locked", bytes(4096))
        path = os.path.join(vfs.root, "locked")  # type: ignore[attr-defined]
        fd = os.open(path, os.O_RDWR)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 100, 0)  # bytes 0..99
            assert _other_process_gets("posix", path), "bytes 100..149 are not locked"
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 200, 0)  # now bytes 0..199
            assert not _other_process_gets("posix", path), "an overlapping lock was granted"
            fcntl.lockf(fd, fcntl.LOCK_UN, 200, 0)
            assert _other_process_gets("posix", path), "the released lock still conflicts"
        finally:
            os.close(fd)

    @requires("writable", "flock_locks")
    @only_mounted("a lock's owner is an open file of a process")
    def test_flock_between_processes(self, vfs: Driver) -> None:
        write_file(vfs, "flocked", b"")
        path = os.path.join(vfs.root, "flocked")  # type: ignore[attr-defined]
        fd = os.open(path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            assert not _other_process_gets("flock", path), "a second flock was granted"
            fcntl.flock(fd, fcntl.LOCK_UN)
            assert _other_process_gets("flock", path), "the released flock still conflicts"
        finally:
            os.close(fd)


class ChainLockChecks:
    """The backend's own lock table, driven directly with two lock owners (what the kernel
    sends for two processes), including F_GETLK, which the mount checks cannot see."""

    @requires("writable", "posix_locks")
    @only_in_process("two lock owners in one process exist only below the kernel")
    def test_posix_lock_table(self, vfs: Driver) -> None:
        assert isinstance(vfs, ChainDriver)
        write_file(vfs, "locked", bytes(4096))
        one, two = vfs.open("locked", os.O_RDWR), vfs.open("locked", os.O_RDWR)
        try:
            chain, ctx = vfs.chain, vfs.ctx

            def setlk(handle: ChainHandle, owner: int, start: int, end: int, kind: int) -> None:
                lock = ops.Lock(start, end, kind, owner)
                chain.setlk(ops.SetlkRequest(ctx, handle.path, handle.fh, owner, lock))

            def getlk(handle: ChainHandle, owner: int, start: int, end: int) -> ops.Lock:
                lock = ops.Lock(start, end, fcntl.F_WRLCK, owner)
                return chain.getlk(ops.GetlkRequest(ctx, handle.path, handle.fh, owner, lock))

            setlk(one, 1, 0, 99, fcntl.F_WRLCK)
            setlk(two, 2, 100, 149, fcntl.F_WRLCK)  # next to it: no conflict
            expect_errno(errno.EAGAIN, setlk, two, 2, 50, 120, fcntl.F_WRLCK)
            found = getlk(two, 2, 50, 60)
            assert (found.type, found.start, found.end) == (fcntl.F_WRLCK, 0, 99)
            assert getlk(one, 1, 0, 99).type == fcntl.F_UNLCK  # an owner never conflicts itself
            setlk(one, 1, 0, 99, fcntl.F_UNLCK)
            setlk(two, 2, 50, 120, fcntl.F_WRLCK)
            assert getlk(one, 1, 0, 10).type == fcntl.F_UNLCK
        finally:
            vfs.close(one)
            vfs.close(two)
