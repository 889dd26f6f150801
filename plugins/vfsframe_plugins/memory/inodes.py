"""The inode types of the memory filesystem and the attributes they report."""

from __future__ import annotations

import os
import stat

from vfsframe import ops

from .content import CHUNK_SIZE, FileContent
from .locks import RecordLocks

# tmpfs's "bogo" directory entry size: a directory reports (entries + 2) * 20 bytes.
_DIRENT_SIZE = 20


class Inode:
    """What every node has. ``nlink`` counts names (for a directory: 2 + subdirectories, 0
    once removed); ``open_count`` counts handles, and the inode is freed when both are 0."""

    __slots__ = (
        "atime_ns",
        "ctime_ns",
        "flock_locks",
        "gid",
        "ino",
        "mode",
        "mtime_ns",
        "nlink",
        "open_count",
        "posix_locks",
        "rdev",
        "uid",
        "xattrs",
    )

    def __init__(self, ino: int, mode: int, uid: int, gid: int, now_ns: int) -> None:
        self.ino = ino
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.nlink = 1
        self.rdev = 0
        self.atime_ns = self.mtime_ns = self.ctime_ns = now_ns
        self.xattrs: dict[str, bytes] = {}
        self.open_count = 0
        self.posix_locks: RecordLocks | None = None
        self.flock_locks: RecordLocks | None = None

    @property
    def size(self) -> int:
        return 0

    @property
    def blocks(self) -> int:
        return 0

    def attr(self) -> ops.Attr:
        return ops.Attr(
            st_ino=self.ino,
            st_mode=self.mode,
            st_nlink=self.nlink,
            st_uid=self.uid,
            st_gid=self.gid,
            st_rdev=self.rdev,
            st_size=self.size,
            st_blocks=self.blocks,
            st_blksize=CHUNK_SIZE,
            st_atime_ns=self.atime_ns,
            st_mtime_ns=self.mtime_ns,
            st_ctime_ns=self.ctime_ns,
        )

    def touch_atime(self, now_ns: int) -> None:
        """relatime: update atime only when it is not newer than mtime or ctime, or is a day
        old, so reads stay cheap yet `atime > mtime` still tells whether a file was read."""
        atime = self.atime_ns
        if atime <= self.mtime_ns or atime <= self.ctime_ns or now_ns - atime >= _DAY_NS:
            self.atime_ns = now_ns

    def touch_modified(self, now_ns: int) -> None:
        self.mtime_ns = self.ctime_ns = now_ns


_DAY_NS = 24 * 3600 * 10**9


class RegularFile(Inode):
    __slots__ = ("content",)

    def __init__(self, ino: int, mode: int, uid: int, gid: int, now_ns: int) -> None:
        super().__init__(ino, mode, uid, gid, now_ns)
        self.content = FileContent()

    @property
    def size(self) -> int:
        return self.content.size

    @property
    def blocks(self) -> int:
        return self.content.blocks


class Directory(Inode):
    """``entries`` keeps insertion order, so listings are stable while nothing changes."""

    __slots__ = ("entries",)

    def __init__(self, ino: int, mode: int, uid: int, gid: int, now_ns: int) -> None:
        super().__init__(ino, mode, uid, gid, now_ns)
        self.nlink = 2
        self.entries: dict[str, Inode] = {}

    @property
    def size(self) -> int:
        return (len(self.entries) + 2) * _DIRENT_SIZE


class Symlink(Inode):
    __slots__ = ("target",)

    def __init__(self, ino: int, uid: int, gid: int, now_ns: int, target: str) -> None:
        super().__init__(ino, stat.S_IFLNK | 0o777, uid, gid, now_ns)
        self.target = target

    @property
    def size(self) -> int:
        return len(os.fsencode(self.target))


class SpecialNode(Inode):
    """A FIFO, socket or device node: only attributes; the kernel serves its I/O itself."""

    __slots__ = ()

    def __init__(self, ino: int, mode: int, uid: int, gid: int, now_ns: int, rdev: int) -> None:
        super().__init__(ino, mode, uid, gid, now_ns)
        self.rdev = rdev
