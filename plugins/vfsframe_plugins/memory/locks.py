"""Byte-range lock bookkeeping for one inode: POSIX record locks, or flock(2) locks kept as
whole-file records in a table of their own (the two kinds never conflict on Linux).

Ranges are inclusive at both ends, as in struct fuse_file_lock. Each owner's records never
overlap one another and same-type neighbours are merged, so a conflict scan is linear in
the number of records and an owner's unlock splits at most one record in two.
"""

from __future__ import annotations

import fcntl
from dataclasses import dataclass

from vfsframe import ops


@dataclass(slots=True)
class LockRecord:
    owner: int
    start: int
    end: int
    type: int
    pid: int


class RecordLocks:
    __slots__ = ("records",)

    def __init__(self) -> None:
        self.records: list[LockRecord] = []

    def conflict(self, owner: int, lock: ops.Lock) -> LockRecord | None:
        """The first record of another owner that overlaps ``lock`` where one side writes."""
        for record in self.records:
            if (
                record.owner != owner
                and record.start <= lock.end
                and lock.start <= record.end
                and (record.type == fcntl.F_WRLCK or lock.type == fcntl.F_WRLCK)
            ):
                return record
        return None

    def apply(self, owner: int, lock: ops.Lock) -> None:
        """Set ``owner``'s lock state over the range to ``lock.type`` (F_UNLCK removes);
        the caller has checked for conflicts."""
        start, end = lock.start, lock.end
        kept: list[LockRecord] = []
        for record in self.records:
            if record.owner != owner or record.end < start or record.start > end:
                kept.append(record)
                continue
            # The owner's record overlaps: keep the parts outside the new range.
            if record.start < start:
                kept.append(LockRecord(owner, record.start, start - 1, record.type, record.pid))
            if record.end > end:
                kept.append(LockRecord(owner, end + 1, record.end, record.type, record.pid))
        if lock.type != fcntl.F_UNLCK:
            merged: list[LockRecord] = []
            for record in kept:
                adjacent = record.start <= end + 1 and start <= record.end + 1
                if record.owner == owner and record.type == lock.type and adjacent:
                    start, end = min(start, record.start), max(end, record.end)
                else:
                    merged.append(record)
            merged.append(LockRecord(owner, start, end, lock.type, lock.pid))
            kept = merged
        self.records = kept

    def release_owner(self, owner: int) -> bool:
        """Drop every record of ``owner``; whether there was any."""
        kept = [record for record in self.records if record.owner != owner]
        released = len(kept) != len(self.records)
        self.records = kept
        return released

    def held_by(self, owner: int) -> list[LockRecord]:
        return [record for record in self.records if record.owner == owner]
