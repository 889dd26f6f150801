"""A bidirectional id map made of ranges, looked up by bisection."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from .config import IdRange


class IdMapping:
    """Guest ↔ host ids for one kind of id (uids or gids)."""

    def __init__(self, ranges: Sequence[IdRange], overflow: int) -> None:
        self.identity = not ranges
        self.overflow = overflow
        self._to_host = sorted((r.guest, r.host, r.count) for r in ranges)
        self._to_guest = sorted((r.host, r.guest, r.count) for r in ranges)
        self._guest_starts = [start for start, _, _ in self._to_host]
        self._host_starts = [start for start, _, _ in self._to_guest]

    def to_host(self, guest_id: int) -> int | None:
        """The host id of ``guest_id``; None when no range maps it."""
        if self.identity:
            return guest_id
        return _find(self._to_host, self._guest_starts, guest_id)

    def to_guest(self, host_id: int) -> int | None:
        if self.identity:
            return host_id
        return _find(self._to_guest, self._host_starts, host_id)

    def host_or_overflow(self, guest_id: int) -> int:
        found = self.to_host(guest_id)
        return self.overflow if found is None else found

    def guest_or_overflow(self, host_id: int) -> int:
        found = self.to_guest(host_id)
        return self.overflow if found is None else found


def _find(table: list[tuple[int, int, int]], starts: list[int], value: int) -> int | None:
    index = bisect.bisect_right(starts, value) - 1
    if index < 0:
        return None
    start, target, count = table[index]
    if value < start + count:
        return target + (value - start)
    return None
