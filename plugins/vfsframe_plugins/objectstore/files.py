"""Open files: the per-inode write-back state and the per-handle readahead.

An ``OpenInode`` exists while a file has open handles. Writing gives it a staging file (an
unnamed temp file holding the whole file, filled from the object on the first write unless
the file was truncated); flush, fsync and release upload the staging file when it is dirty.
Every handle of the inode shares it, so a reader through another handle sees the writes.

A ``FileHandle`` without staging reads from the store through an ``ObjectReader`` opened on
its first read, so one handle reads one version of the object (close-to-open).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Executor, Future

from .metadata import Meta
from .store import ObjectInfo, ObjectReader

# The first GET of a sequential reader is at least this long.
MIN_WINDOW = 256 << 10
# Windows fetched ahead of a sequential reader, each on its own connection.
DEPTH = 2


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
    """One open(2) of a file: its flags and its readahead.

    A sequential reader's window doubles from MIN_WINDOW (or twice the read) up to the
    configured readahead; while the reader consumes one window, the next DEPTH windows are
    fetched in the background, so the store streams (over several connections) while the
    kernel copies."""

    __slots__ = (
        "_buffer",
        "_end",
        "_next",
        "_pending",
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
        # The next windows, being fetched: (start, length, future), in object order.
        self._pending: deque[tuple[int, int, Future[bytearray]]] = deque()

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
        pool: Executor | None = None,
    ) -> bytes | int:
        """Serve a read from the readahead buffer or with a ranged GET; with ``buffers``
        fill them and return the count, else return the bytes."""
        size = max(0, min(size, reader.size - offset))
        if size == 0:
            return 0 if buffers else b""
        if not self._covers(offset, size) and not self._take_pending(offset, size):
            # A read from the start counts as sequential: most files are read whole.
            sequential = offset in (self._next, 0)
            grown = max(self._window * 2, size * 2, MIN_WINDOW)
            self._window = min(limit, grown) if sequential else 0
            length = min(max(size, self._window), reader.size - offset)
            if length == size:  # no readahead: straight into the caller's buffers
                self._next = offset + size
                return _direct(reader, offset, size, buffers)
            self._buffer = _fetch(reader, offset, length)
            self._start, self._end = offset, offset + len(self._buffer)
        self._next = offset + size
        view = memoryview(self._buffer)[offset - self._start : offset - self._start + size]
        try:
            result = copy_out(view, buffers) if buffers else bytes(view)
        finally:
            view.release()
        self._prefetch(reader, limit, pool)
        return result

    def _covers(self, offset: int, size: int) -> bool:
        return self._start <= offset and offset + size <= self._end

    def _take_pending(self, offset: int, size: int) -> bool:
        """Make the background window that holds the read the buffer; windows before it
        are passed over, and a read outside them all drops them."""
        while self._pending:
            start, length, future = self._pending[0]
            if offset < start or offset >= start + length:
                if offset >= start + length:  # the reader is past this window
                    self._pending.popleft()
                    _settle(future)
                    continue
                break
            self._pending.popleft()
            buffer = future.result()
            if offset + size > start + len(buffer):
                break
            self._buffer, self._start, self._end = buffer, start, start + len(buffer)
            return True
        self._drop_pending()
        return False

    def _prefetch(self, reader: ObjectReader, limit: int, pool: Executor | None) -> None:
        if pool is None or self._window == 0 or self._next < self._start:
            return
        while len(self._pending) < DEPTH:
            start = self._pending[-1][0] + self._pending[-1][1] if self._pending else self._end
            if start >= reader.size:
                return
            self._window = min(limit, self._window * 2)
            length = min(self._window, reader.size - start)
            self._pending.append((start, length, pool.submit(_fetch, reader, start, length)))

    def _drop_pending(self) -> None:
        while self._pending:
            _settle(self._pending.popleft()[2])

    def close(self) -> None:
        self._drop_pending()  # background GETs finish before their reader goes away
        if self.reader is not None:
            self.reader.close()
            self.reader = None
        self._buffer = bytearray()


def _settle(future: Future[bytearray]) -> None:
    """Wait for a window nobody will read (its GET may still use the reader)."""
    if not future.cancel():
        with contextlib.suppress(Exception):
            future.result()


def _fetch(reader: ObjectReader, offset: int, length: int) -> bytearray:
    buffer = bytearray(length)
    count = reader.read_into(offset, [memoryview(buffer)])
    del buffer[count:]
    return buffer


def _direct(
    reader: ObjectReader, offset: int, size: int, buffers: Sequence[memoryview]
) -> bytes | int:
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
