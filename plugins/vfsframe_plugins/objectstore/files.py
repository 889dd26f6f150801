"""Open files: the per-inode write-back state and the per-handle readahead.

An ``OpenInode`` exists while a file has open handles. Writing gives it a staging file (an
unnamed temp file holding the whole file, filled from the object on the first write unless
the file was truncated); flush, fsync and release upload the staging file when it is dirty.
Every handle of the inode shares it, so a reader through another handle sees the writes.

A ``FileHandle`` without staging reads from the store through an ``ObjectReader`` opened on
its first read, so one handle reads one version of the object (close-to-open).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

from .metadata import Meta
from .store import ObjectInfo, ObjectReader

# The first GET of a sequential reader is at least this long.
MIN_WINDOW = 256 << 10


class OpenInode:
    __slots__ = ("dirty", "info", "ino", "lock", "meta", "opens", "path", "size", "staging")

    def __init__(self, ino: int, path: str, meta: Meta, info: ObjectInfo | None) -> None:
        self.ino = ino
        self.path: str | None = path  # None once unlinked: nothing is uploaded then
        self.meta = meta
        self.info = info  # the object version the inode was opened on (None: not stored yet)
        self.size = info.size if info is not None else 0
        self.staging: int | None = None  # fd of the staging file
        self.dirty = False  # staging (or meta) differs from the store
        self.opens = 0
        self.lock = threading.RLock()

    def close_staging(self) -> None:
        if self.staging is not None:
            os.close(self.staging)
            self.staging = None


def copy_out(source: memoryview, buffers: Sequence[memoryview]) -> int:
    """Scatter ``source`` into ``buffers``; returns the bytes copied."""
    done = 0
    for buffer in buffers:
        if done >= len(source):
            break
        step = min(len(buffer), len(source) - done)
        buffer[:step] = source[done : done + step]
        done += step
    return done


class FileHandle:
    """One open(2) of a file: its flags and its readahead window."""

    __slots__ = (
        "_buffer",
        "_end",
        "_next",
        "_start",
        "_window",
        "flags",
        "inode",
        "lock",
        "reader",
    )

    def __init__(self, inode: OpenInode, flags: int) -> None:
        self.inode = inode
        self.flags = flags
        self.reader: ObjectReader | None = None
        self.lock = threading.Lock()
        self._buffer = bytearray()
        self._start = self._end = 0  # the buffered range of the object
        self._next = -1  # where a sequential reader reads next
        self._window = 0

    @property
    def writable(self) -> bool:
        return self.flags & os.O_ACCMODE != os.O_RDONLY

    def read(
        self,
        reader: ObjectReader,
        offset: int,
        size: int,
        buffers: Sequence[memoryview],
        limit: int,
    ) -> bytes | int:
        """Serve a read from the readahead buffer or with a ranged GET; with ``buffers``
        fill them and return the count, else return the bytes."""
        size = max(0, min(size, reader.size - offset))
        if size == 0:
            return 0 if buffers else b""
        if not (self._start <= offset and offset + size <= self._end):
            self._fetch(reader, offset, size, limit)
            if self._buffer is None:  # read straight into the caller's buffers
                self._next = offset + size
                return self._direct(reader, offset, size, buffers)
        self._next = offset + size
        view = memoryview(self._buffer)[offset - self._start : offset - self._start + size]
        try:
            return copy_out(view, buffers) if buffers else bytes(view)
        finally:
            view.release()

    def _fetch(self, reader: ObjectReader, offset: int, size: int, limit: int) -> None:
        sequential = offset == self._next
        self._window = min(limit, max(self._window * 2, MIN_WINDOW)) if sequential else 0
        length = min(max(size, self._window), reader.size - offset)
        if length == size:
            self._buffer = None  # type: ignore[assignment]  # marks a direct read
            self._start = self._end = 0
            return
        buffer = bytearray(length)
        count = reader.read_into(offset, [memoryview(buffer)])
        del buffer[count:]
        self._buffer, self._start, self._end = buffer, offset, offset + count

    def _direct(
        self, reader: ObjectReader, offset: int, size: int, buffers: Sequence[memoryview]
    ) -> bytes | int:
        self._buffer = bytearray()
        if buffers:
            views, left = [], size
            for buffer in buffers:  # only as much as was asked: a GET of exactly size bytes
                if left <= 0:
                    break
                views.append(buffer[:left])
                left -= len(views[-1])
            return reader.read_into(offset, views)
        data = bytearray(size)
        count = reader.read_into(offset, [memoryview(data)])
        return bytes(data[:count])

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None
        self._buffer = bytearray()
