"""Reading a member's bytes without unpacking the archive.

- ``SliceReader``: the member lies uncompressed at a known offset of the archive file (plain
  tar, stored zip members): ``os.preadv`` straight into the request's buffers, any offset,
  any thread, no state.
- ``StreamReader``: the member must be decompressed (tar.gz/xz/bz2, deflated zip members,
  sparse tar members). Each open file gets its own decompressing stream; sequential reads
  continue it, a read behind its position restarts it (the format allows nothing better).
  Memory stays bounded by the read size whatever the member's size.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import BinaryIO


class SliceReader:
    def __init__(self, fd: int, start: int, size: int) -> None:
        self._fd, self._start, self._size = fd, start, size

    def read(self, offset: int, size: int, buffers: Sequence[memoryview]) -> bytes | int:
        size = max(0, min(size, self._size - offset))
        if size == 0:
            return b""
        if not buffers:
            return os.pread(self._fd, size, self._start + offset)
        views, left = [], size
        for buffer in buffers:
            if left == 0:
                break
            views.append(buffer[:left])
            left -= len(views[-1])
        return os.preadv(self._fd, views, self._start + offset)

    def close(self) -> None:
        """The archive's descriptor belongs to the backend."""


class StreamReader:
    def __init__(self, open_stream: Callable[[], BinaryIO], size: int) -> None:
        self._open_stream = open_stream
        self._size = size
        self._stream: BinaryIO | None = None
        self._position = 0
        self._lock = threading.Lock()  # the kernel may send two reads of one file at once

    def read(self, offset: int, size: int, buffers: Sequence[memoryview]) -> bytes:
        size = max(0, min(size, self._size - offset))
        if size == 0:
            return b""
        with self._lock:
            if self._stream is None or offset < self._position:
                self.close()
                self._stream = self._open_stream()
                self._position = 0
            if offset > self._position:
                self._stream.seek(offset)  # forward: decompresses and discards the gap
            data = self._stream.read(size)
            self._position = offset + len(data)
            return data

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None
