"""The data tier of the cache: fixed-size blocks per inode, LRU in RAM, optionally spilled
to an unlinked file on disk."""

from __future__ import annotations

import os
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

BlockKey = tuple[int, int]  # (inode number, block index)


class BlockCache:
    """Blocks of file data keyed by (ino, index).

    A block shorter than ``block_size`` (possibly empty) ends the file: the cache can answer
    reads at and past the end without asking the backend. Thread-safe.
    """

    def __init__(
        self, block_size: int, memory: int, spill_dir: Path | None = None, spill_size: int = 0
    ) -> None:
        self.block_size = block_size
        self.memory = memory
        self._ram: OrderedDict[BlockKey, tuple[bytes, float]] = OrderedDict()
        self._ram_bytes = 0
        self._by_ino: dict[int, set[int]] = {}
        self._lock = threading.Lock()
        self._spill: SpillFile | None = None
        if spill_dir is not None:
            self._spill = SpillFile(spill_dir, block_size, spill_size // block_size)

    def get(self, ino: int, index: int, now: float) -> bytes | None:
        key = (ino, index)
        with self._lock:
            found = self._ram.get(key)
            if found is not None:
                data, expires = found
                if expires >= now:
                    self._ram.move_to_end(key)
                    return data
                self._drop_key(key)
                return None
            if self._spill is None:
                return None
            spilled = self._spill.take(key, now)
            if spilled is None:
                if key not in self._spill:
                    self._forget_index(key)
                return None
            data, expires = spilled
            self._store_ram(key, data, expires)  # promoted: it is hot again
            return data

    def put(self, ino: int, index: int, data: bytes, expires: float) -> None:
        key = (ino, index)
        with self._lock:
            if self._spill is not None:
                self._spill.discard(key)
            if key in self._ram:
                self._ram_bytes -= len(self._ram.pop(key)[0])
            self._by_ino.setdefault(ino, set()).add(index)
            self._store_ram(key, data, expires)

    def drop_ino(self, ino: int) -> None:
        with self._lock:
            for index in self._by_ino.pop(ino, ()):
                key = (ino, index)
                found = self._ram.pop(key, None)
                if found is not None:
                    self._ram_bytes -= len(found[0])
                if self._spill is not None:
                    self._spill.discard(key)

    def clear(self) -> None:
        with self._lock:
            self._ram.clear()
            self._ram_bytes = 0
            self._by_ino.clear()
            if self._spill is not None:
                self._spill.clear()

    def close(self) -> None:
        self.clear()
        if self._spill is not None:
            self._spill.close()

    @property
    def ram_bytes(self) -> int:
        return self._ram_bytes

    @property
    def spilled_blocks(self) -> int:
        return 0 if self._spill is None else len(self._spill)

    # -- under the lock ------------------------------------------------------------------

    def _store_ram(self, key: BlockKey, data: bytes, expires: float) -> None:
        self._ram[key] = (data, expires)
        self._ram_bytes += len(data)
        while self._ram_bytes > self.memory and self._ram:
            old_key, (old_data, old_expires) = self._ram.popitem(last=False)
            self._ram_bytes -= len(old_data)
            if self._spill is not None:
                evicted = self._spill.put(old_key, old_data, old_expires)
                if evicted is not None:
                    self._forget_index(evicted)
            else:
                self._forget_index(old_key)

    def _drop_key(self, key: BlockKey) -> None:
        found = self._ram.pop(key, None)
        if found is not None:
            self._ram_bytes -= len(found[0])
        self._forget_index(key)

    def _forget_index(self, key: BlockKey) -> None:
        indexes = self._by_ino.get(key[0])
        if indexes is not None:
            indexes.discard(key[1])
            if not indexes:
                del self._by_ino[key[0]]


class SpillFile:
    """Fixed slots of one block each in an unlinked temporary file; LRU when full.

    Not locked: its owner (BlockCache) holds its lock around every call.
    """

    def __init__(self, directory: Path, block_size: int, slots: int) -> None:
        self.block_size = block_size
        self._file = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115 - closed in close()
        self._fd = self._file.fileno()
        self._free = list(range(slots - 1, -1, -1))
        self._slots: OrderedDict[BlockKey, tuple[int, int, float]] = OrderedDict()

    def __contains__(self, key: BlockKey) -> bool:
        return key in self._slots

    def __len__(self) -> int:
        return len(self._slots)

    def put(self, key: BlockKey, data: bytes, expires: float) -> BlockKey | None:
        """Store a block; returns the key of the block evicted to make room, if any."""
        evicted = None
        self.discard(key)
        if not self._free:
            evicted, (slot, _, _) = self._slots.popitem(last=False)
            self._free.append(slot)
        slot = self._free.pop()
        os.pwrite(self._fd, data, slot * self.block_size)
        self._slots[key] = (slot, len(data), expires)
        return evicted

    def take(self, key: BlockKey, now: float) -> tuple[bytes, float] | None:
        """Remove and return a block that has not expired."""
        found = self._slots.pop(key, None)
        if found is None:
            return None
        slot, length, expires = found
        self._free.append(slot)
        if expires < now:
            return None
        return os.pread(self._fd, length, slot * self.block_size), expires

    def discard(self, key: BlockKey) -> None:
        found = self._slots.pop(key, None)
        if found is not None:
            self._free.append(found[0])

    def clear(self) -> None:
        for slot, _, _ in self._slots.values():
            self._free.append(slot)
        self._slots.clear()

    def close(self) -> None:
        self._file.close()
