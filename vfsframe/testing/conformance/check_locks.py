"""Locks between processes, through the mount (a lock's owner is a process)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys

from vfsframe.testing.conformance.drivers import Driver, write_file
from vfsframe.testing.conformance.marks import only_mounted, requires

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
