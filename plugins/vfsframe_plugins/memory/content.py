"""A regular file's bytes: a sparse set of fixed-span chunks.

Chunk ``i`` covers file offsets ``[i * CHUNK_SIZE, (i + 1) * CHUNK_SIZE)``. A missing chunk
is a hole and reads as zeros. A present chunk is a ``bytearray`` that may be shorter than
its span: the bytes past its end are zeros too, so a small file costs only its length and
a write at the start of an empty chunk does not allocate the whole span.

Invariants the methods keep: no byte beyond ``size`` is ever non-zero (truncate trims the
chunk that straddles the new end), and ``allocated`` is the sum of the chunks' lengths.
Nothing here locks; the backend calls it under its lock.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

CHUNK_SIZE = 128 * 1024

# Slicing a memoryview is O(1), slicing bytes copies: zero-fill from this view.
_ZEROS = memoryview(bytes(CHUNK_SIZE))


def as_bytes_view(buffer: memoryview | bytes | bytearray) -> memoryview:
    """A flat unsigned-byte view of any buffer, so ``len()`` counts bytes."""
    view = buffer if type(buffer) is memoryview else memoryview(buffer)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


class FileContent:
    __slots__ = ("allocated", "chunks", "size")

    def __init__(self) -> None:
        self.chunks: dict[int, bytearray] = {}
        self.size = 0
        self.allocated = 0

    # -- reading ----------------------------------------------------------------------

    def read_into(self, offset: int, size: int, buffers: Iterable[memoryview]) -> int:
        """Copy up to ``size`` bytes at ``offset`` into the scattered ``buffers``; the count.

        One pass over two cursors (file position, buffer position): each step copies what
        remains of the current chunk or of the current buffer, whichever ends first.
        """
        end = min(offset + size, self.size)
        if end <= offset:
            return 0
        chunks = self.chunks
        pos = offset
        base = -CHUNK_SIZE  # file offset of the chunk under the cursor; none yet
        source: memoryview | None = None
        stored = 0
        # A view left alive (say, in a traceback) would stop the chunk from being resized.
        try:
            for buffer in buffers:
                buf = as_bytes_view(buffer)
                want = min(len(buf), end - pos)
                done = 0
                while done < want:
                    if pos >= base + CHUNK_SIZE:
                        index = pos // CHUNK_SIZE
                        base = index * CHUNK_SIZE
                        chunk = chunks.get(index)
                        source = None if chunk is None else memoryview(chunk)
                        stored = 0 if chunk is None else len(chunk)
                    within = pos - base
                    step = min(CHUNK_SIZE - within, want - done)
                    have = min(stored - within, step)
                    if have > 0:
                        assert source is not None
                        buf[done : done + have] = source[within : within + have]
                    else:
                        have = 0
                    if have < step:
                        buf[done + have : done + step] = _ZEROS[: step - have]
                    done += step
                    pos += step
                if pos >= end:
                    break
        finally:
            if source is not None:
                source.release()
        return pos - offset

    def read(self, offset: int, size: int) -> bytearray:
        """A copy of up to ``size`` bytes at ``offset`` (never a view of a chunk: a live
        export would stop the chunk from being resized later)."""
        length = max(0, min(size, self.size - offset))
        out = bytearray(length)
        if length:
            self.read_into(offset, length, (memoryview(out),))
        return out

    # -- writing ----------------------------------------------------------------------

    def growth(self, offset: int, end: int) -> int:
        """How many bytes of chunk storage writing ``[offset, end)`` would add."""
        added = 0
        for index in range(offset // CHUNK_SIZE, (end - 1) // CHUNK_SIZE + 1):
            chunk = self.chunks.get(index)
            needed = min(CHUNK_SIZE, end - index * CHUNK_SIZE)
            added += max(0, needed - (0 if chunk is None else len(chunk)))
        return added

    def write(self, offset: int, views: Sequence[memoryview]) -> int:
        """Copy the scattered ``views`` to ``offset`` without joining them; the count."""
        sources = [as_bytes_view(view) for view in views]
        total = sum(map(len, sources))
        if not total:
            return 0
        # Size every chunk the write touches first, so the copies below never resize a
        # bytearray (and may hold a view of it).
        self.allocate(offset, total)
        chunks = self.chunks
        pos = offset
        base = -CHUNK_SIZE
        target = memoryview(b"")
        try:
            for source in sources:
                length = len(source)
                done = 0
                while done < length:
                    if pos >= base + CHUNK_SIZE:
                        index = pos // CHUNK_SIZE
                        base = index * CHUNK_SIZE
                        target = memoryview(chunks[index])
                    within = pos - base
                    step = min(CHUNK_SIZE - within, length - done)
                    target[within : within + step] = source[done : done + step]
                    done += step
                    pos += step
        finally:
            target.release()
        if pos > self.size:
            self.size = pos
        return total

    def zero(self, offset: int, length: int) -> None:
        """Make ``[offset, offset + length)`` read as zeros, freeing whole chunks (punch)."""
        end = offset + length
        for index in self._present(offset, end):
            start = index * CHUNK_SIZE
            chunk = self.chunks[index]
            lo = max(offset, start) - start
            hi = min(end - start, CHUNK_SIZE)
            if lo >= len(chunk):
                continue  # the range lies in the chunk's implicit zero tail
            if lo == 0 and hi >= len(chunk):
                del self.chunks[index]
                self.allocated -= len(chunk)
            elif hi >= len(chunk):
                self.allocated -= len(chunk) - lo
                del chunk[lo:]
            elif lo < len(chunk):
                chunk[lo:hi] = _ZEROS[: hi - lo]

    def allocate(self, offset: int, length: int) -> None:
        """Back ``[offset, offset + length)`` with zero-filled chunk storage (fallocate)."""
        end = offset + length
        for index in range(offset // CHUNK_SIZE, (end - 1) // CHUNK_SIZE + 1):
            needed = min(CHUNK_SIZE, end - index * CHUNK_SIZE)
            chunk = self.chunks.get(index)
            if chunk is None:
                self.chunks[index] = bytearray(needed)
                self.allocated += needed
            elif len(chunk) < needed:
                self.allocated += needed - len(chunk)
                chunk += _ZEROS[: needed - len(chunk)]

    def truncate(self, size: int) -> None:
        """Set the size. Shrinking drops every byte past the new end (chunks allocated past
        the old end by fallocate KEEP_SIZE too, as tmpfs does), so a later extension reads
        zeros."""
        if size < self.size:
            first = size // CHUNK_SIZE
            for index in [i for i in self.chunks if i >= first]:
                start = index * CHUNK_SIZE
                chunk = self.chunks[index]
                if start >= size:
                    del self.chunks[index]
                    self.allocated -= len(chunk)
                elif len(chunk) > size - start:
                    self.allocated -= len(chunk) - (size - start)
                    del chunk[size - start :]
        self.size = size

    def copy_from(self, source: FileContent, offset: int, out: int, length: int) -> None:
        """Copy ``source``'s ``[offset, offset + length)`` to ``out`` chunk by chunk; holes in
        the source stay (or become) holes here. The ranges must not overlap if ``source`` is
        this file."""
        end = out + length
        while length:
            index, within = divmod(offset, CHUNK_SIZE)
            step = min(CHUNK_SIZE - within, length)
            chunk = source.chunks.get(index)
            have = 0 if chunk is None else max(0, min(len(chunk) - within, step))
            if have:
                assert chunk is not None
                if source is self:
                    # The chunk may be the one written to: copy the piece out (a slice is a copy).
                    self.write(out, (memoryview(chunk[within : within + have]),))
                else:
                    with memoryview(chunk) as whole:
                        self.write(out, (whole[within : within + have],))
            if have < step:
                self.zero(out + have, step - have)
            offset += step
            out += step
            length -= step
        if end > self.size:
            self.size = end

    # -- layout -----------------------------------------------------------------------

    def _present(self, offset: int, end: int) -> list[int]:
        """The indexes of present chunks overlapping ``[offset, end)``, ascending."""
        first = offset // CHUNK_SIZE
        last = (end - 1) // CHUNK_SIZE
        if last - first + 1 <= len(self.chunks):
            return [i for i in range(first, last + 1) if i in self.chunks]
        return sorted(i for i in self.chunks if first <= i <= last)

    def next_data(self, offset: int) -> int | None:
        """The first offset at or after ``offset`` in an allocated chunk and below the size."""
        if offset >= self.size:
            return None
        first = offset // CHUNK_SIZE
        if first in self.chunks:
            return offset
        later = [i for i in self.chunks if i > first]
        if not later:
            return None
        start = min(later) * CHUNK_SIZE
        return start if start < self.size else None

    def next_hole(self, offset: int) -> int | None:
        """The first offset at or after ``offset`` in a hole; the end of file counts as one."""
        if offset >= self.size:
            return None
        index = offset // CHUNK_SIZE
        while index in self.chunks:
            index += 1
        return min(max(offset, index * CHUNK_SIZE), self.size)

    @property
    def blocks(self) -> int:
        """st_blocks: the storage held, in 512-byte units."""
        return (self.allocated + 511) >> 9
