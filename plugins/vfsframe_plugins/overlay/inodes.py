"""Overlay inode numbers: one table from (layer, the layer's st_ino) to the overlay's st_ino.

Two layers may both have an inode 5, so the overlay numbers inodes itself. A key is
(layer index, child st_ino), so every hard link of one layer file gets one number. A copy-up
*adopts* the origin's number for the new upper inode, so st_ino stays the same across a
copy-up (and the kernel keeps one node for the file).
"""

from __future__ import annotations

import threading

ROOT_INO = 1


class InodeNumbers:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_key: dict[tuple[int, int], int] = {}
        self._next = ROOT_INO + 1

    def number(self, layer: int, child_ino: int) -> int:
        key = (layer, child_ino)
        ino = self._by_key.get(key)
        if ino is None:
            with self._lock:
                ino = self._by_key.get(key)
                if ino is None:
                    ino = self._next
                    self._next += 1
                    self._by_key[key] = ino
        return ino

    def adopt(self, layer: int, child_ino: int, ino: int) -> None:
        """From now on (layer, child_ino) is overlay inode ``ino`` (a copy-up's origin)."""
        with self._lock:
            self._by_key[(layer, child_ino)] = ino

    def forget(self, layer: int, child_ino: int) -> None:
        """The layer inode is gone; if the layer reuses its number, it is a new inode."""
        with self._lock:
            self._by_key.pop((layer, child_ino), None)

    def __len__(self) -> int:
        return len(self._by_key)
