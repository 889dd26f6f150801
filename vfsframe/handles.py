"""Open files and directories: the 64-bit handles the kernel holds, and what they stand for."""

from __future__ import annotations

import errno
import itertools
import threading
from dataclasses import dataclass, field
from typing import Any

from vfsframe import ops
from vfsframe.nodes import Node


@dataclass(slots=True)
class OpenFile:
    node: Node
    backend_fh: Any
    flags: int


@dataclass(slots=True)
class OpenDirectory:
    node: Node
    backend_fh: Any
    # The listing the kernel's offsets index: taken on the first read and on rewind, so an
    # offset stays valid however the directory changes while it is open.
    entries: list[ops.DirEntry] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class HandleTable:
    """Thread-safe fh → open object table. Handle numbers are never reused."""

    def __init__(self) -> None:
        self._handles: dict[int, OpenFile | OpenDirectory] = {}
        self._counter = itertools.count(1)

    def __len__(self) -> int:
        return len(self._handles)

    def add(self, handle: OpenFile | OpenDirectory) -> int:
        fh = next(self._counter)  # itertools.count is atomic under the GIL
        self._handles[fh] = handle
        return fh

    def file(self, fh: int) -> OpenFile:
        handle = self._handles.get(fh)
        if not isinstance(handle, OpenFile):
            raise OSError(errno.EBADF, f"no open file {fh}")
        return handle

    def directory(self, fh: int) -> OpenDirectory:
        handle = self._handles.get(fh)
        if not isinstance(handle, OpenDirectory):
            raise OSError(errno.EBADF, f"no open directory {fh}")
        return handle

    def open_file_of(self, node: Node) -> OpenFile | None:
        """Any open file of ``node`` (a scan: only for the rare nameless node)."""
        for handle in list(self._handles.values()):
            if isinstance(handle, OpenFile) and handle.node is node:
                return handle
        return None

    def pop(self, fh: int) -> OpenFile | OpenDirectory | None:
        return self._handles.pop(fh, None)

    def drain(self) -> list[OpenFile | OpenDirectory]:
        """Remove and return every handle (the connection is gone)."""
        handles, self._handles = list(self._handles.values()), {}
        return handles
