"""Open handles: what the backend gives the session at open and sees again on each I/O.

A handle holds its inode, so I/O keeps working after the last name is unlinked; the inode
is freed at the last release.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .inodes import Directory, Inode


class FileHandle:
    __slots__ = ("flags", "flock_owners", "inode", "posix_owners", "released")

    def __init__(self, inode: Inode, flags: int) -> None:
        self.inode = inode
        self.flags = flags
        # Lock owners that took locks through this handle, to release them with it.
        self.posix_owners: set[int] = set()
        self.flock_owners: set[int] = set()
        self.released = False

    def __repr__(self) -> str:
        return f"FileHandle(ino={self.inode.ino}, flags={self.flags:#o})"


class DirHandle:
    __slots__ = ("inode", "released")

    def __init__(self, inode: Directory) -> None:
        self.inode = inode
        self.released = False

    def __repr__(self) -> str:
        return f"DirHandle(ino={self.inode.ino})"
