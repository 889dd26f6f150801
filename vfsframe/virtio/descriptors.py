"""What a split virtqueue's descriptors look like, and what popping one yields or raises.

Shared by both ring implementations: split_ring.PyRing in Python and the C module
_split_ring, which imports Chain and RingCorrupt from here so the two raise and return the
same types.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

DESC = struct.Struct("<QIHH")  # addr, len, flags, next
DESC_F_NEXT = 1
DESC_F_WRITE = 2
DESC_F_INDIRECT = 4
AVAIL_F_NO_INTERRUPT = 1


class RingCorrupt(Exception):
    """The ring itself is corrupt (an index out of range, a loop, a bad indirect table)."""


@dataclass(slots=True)
class Chain:
    """One available descriptor chain, its buffers as views into guest memory."""

    head: int
    readable: list[memoryview]
    writable: list[memoryview]
    error: str | None = None  # set when the chain is well formed but its buffers are not

    @property
    def size(self) -> int:
        """Bytes in all its buffers, readable and writable."""
        return sum(map(len, self.readable)) + sum(map(len, self.writable))

    def release(self) -> None:
        """Drop the views so a removed memory region can be unmapped."""
        for v in self.readable:
            v.release()
        for v in self.writable:
            v.release()
        self.readable.clear()
        self.writable.clear()
