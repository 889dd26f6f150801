"""Open handles: a host descriptor per guest open, as the session hands them back."""

from __future__ import annotations

import os


class FileHandle:
    """One guest open of a file: its own host open file description (so flock(2) and file
    status flags behave per open, as on the host)."""

    __slots__ = ("append", "fd", "flags", "key", "read_fd")

    def __init__(self, fd: int, flags: int, key: tuple[int, int]) -> None:
        self.fd = fd
        self.flags = flags  # as the guest opened it
        self.append = bool(flags & os.O_APPEND)
        self.key = key  # (st_dev, st_ino) of the host file, for the lock table
        # A second, readable descriptor when the guest opened write-only but the kernel reads
        # through the handle anyway (partial pages under the writeback cache).
        self.read_fd = -1

    def close(self) -> None:
        os.close(self.fd)
        if self.read_fd >= 0:
            os.close(self.read_fd)

    def __repr__(self) -> str:
        return f"FileHandle(fd={self.fd}, flags={self.flags:#o})"


class DirHandle:
    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __repr__(self) -> str:
        return f"DirHandle(fd={self.fd})"
