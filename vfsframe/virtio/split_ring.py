"""A split virtqueue's data path in Python (virtio 1.1 section 2.6): walking descriptor chains
and filling the used ring. This is the reference implementation; the C module _split_ring
does the same, faster, and tests/virtio holds the two to identical results.

The guest owns these rings and may write anything into them at any time, so every descriptor
is read exactly once (no check-then-use of guest memory), every index is bounded, and every
buffer goes through GuestMemory's range checks. Faults are of two kinds:

- a corrupt ring (index out of range, a loop, a nested or malformed indirect table):
  RingCorrupt is raised, and the queue must not be served any more;
- a well-formed chain whose buffers are bad (outside guest RAM, readable after writable):
  the chain is returned with `error` set so the device can answer it with an error and the
  driver gets its descriptors back.

Memory ordering: this is x86-64 (TSO), where stores are seen in program order and loads are
not reordered with other loads, so the virtio read/write barriers are free. The one place a
full barrier is needed is a store followed by a load of the other side's field (used index
then used_event; avail_event then avail index): there we go through a lock operation, which
is a locked instruction and therefore a full fence.
"""

from __future__ import annotations

import operator
import os
import threading
from itertools import compress

from vfsframe.virtio.descriptors import (
    AVAIL_F_NO_INTERRUPT,
    DESC,
    DESC_F_INDIRECT,
    DESC_F_NEXT,
    DESC_F_WRITE,
    Chain,
    RingCorrupt,
)
from vfsframe.virtio.memory import GuestMemory, GuestMemoryError, MemoryRegion

# Indirect tables at least this long are read in one go (_flat_table); below that the
# descriptor-by-descriptor walk is as quick.
FLAT_TABLE_MIN = 8
_CHAINED_FLAGS = frozenset((DESC_F_NEXT, DESC_F_NEXT | DESC_F_WRITE))

_fence_lock = threading.Lock()


def full_fence() -> None:
    """A full memory barrier: an uncontended lock acquire/release is a locked RMW on x86."""
    with _fence_lock:
        pass


def need_event(event: int, new: int, old: int) -> bool:
    """virtio's vring_need_event: did the used index cross `event` going from old to new?"""
    return ((new - event - 1) & 0xFFFF) < ((new - old) & 0xFFFF)


class _Runs:
    """Turns a chain's buffers into views, one view for each run of buffers that follow one
    another in guest memory: a guest's pages often do, and every view costs the layers above
    (and an iovec in preadv/pwritev). A buffer that does not lie in one region goes through
    GuestMemory.gather, which checks it and may split it or refuse it."""

    __slots__ = ("end", "memory", "out", "region", "start")

    def __init__(self, memory: GuestMemory, out: list[memoryview]) -> None:
        self.memory = memory
        self.out = out
        self.region: MemoryRegion | None = None  # of the run being extended
        self.start = self.end = 0  # the run, as offsets into region.view

    @property
    def pending(self) -> bool:
        return self.region is not None

    def add(self, addr: int, length: int) -> None:
        region = self.region
        if region is not None:
            if addr == region.guest_addr + self.end and addr + length <= region.guest_end:
                self.end += length
                return
            self.flush()
        if not length:
            return
        region = self.memory.region_containing(addr, length)
        if region is None:
            self.memory.gather(addr, length, self.out)  # spans regions, or raises
            return
        self.region = region
        self.start = addr - region.guest_addr
        self.end = self.start + length

    def flush(self) -> None:
        if self.region is not None:
            self.out.append(self.region.view[self.start : self.end])
            self.region = None


def _flat_table(head: int, memory: GuestMemory, table: memoryview) -> Chain | None:
    """The chain an indirect table describes when it is the plain kind every guest driver
    writes: descriptor i continues at i + 1, readable buffers then writable ones, none empty,
    each run of neighbouring buffers inside one memory region. Read with a handful of
    C-level list operations instead of a Python step per descriptor (a 1 MiB READ or WRITE
    has 256). None for any other table: the descriptor-by-descriptor walk then serves it and
    judges what is wrong with it."""
    raw = memoryview(bytes(table))  # one read of guest memory: no check-then-use
    count = len(raw) // 16
    addrs = raw.cast("Q")[0::2].tolist()
    lengths = raw.cast("I")[2::4].tolist()
    halves = raw.cast("H")
    flags = halves[6::8].tolist()
    if flags[-1] & ~DESC_F_WRITE or not _CHAINED_FLAGS.issuperset(flags[:-1]):
        return None
    if not all(map(operator.eq, halves[7::8].tolist(), range(1, count))) or 0 in lengths:
        return None
    split = count - flags.count(DESC_F_NEXT | DESC_F_WRITE) - (flags[-1] == DESC_F_WRITE)
    if DESC_F_NEXT | DESC_F_WRITE in flags[:split]:
        return None  # a readable buffer after a writable one
    ends = list(map(operator.add, addrs, lengths))
    readable = _joined_views(memory, addrs[:split], ends[:split])
    writable = _joined_views(memory, addrs[split:], ends[split:])
    if readable is None or writable is None:
        return None
    return Chain(head, readable, writable)


def _joined_views(
    memory: GuestMemory, addrs: list[int], ends: list[int]
) -> list[memoryview] | None:
    """One view per run of buffers that follow one another, as _Runs makes them; None if a
    run is not inside one memory region."""
    if not addrs:
        return []
    # A run starts where a buffer does not begin where the one before it ended.
    cuts = list(compress(range(1, len(addrs)), map(operator.ne, addrs[1:], ends)))
    views: list[memoryview] = []
    region: MemoryRegion | None = None
    for start, stop in zip([0, *cuts], [*cuts, len(addrs)], strict=True):
        low, high = addrs[start], ends[stop - 1]
        if region is None or low < region.guest_addr or high > region.guest_end:
            region = memory.region_containing(low, high - low)
            if region is None:
                return None
        views.append(region.view[low - region.guest_addr : high - region.guest_addr])
    return views


class PyRing:
    """The rings of one attached split virtqueue: popped by one thread at a time, pushed by
    any thread. `desc`, `avail` and `used` are views of the three rings; the ring owns them."""

    def __init__(
        self,
        memory: GuestMemory,
        size: int,
        desc: memoryview,
        avail: memoryview,
        used: memoryview,
        last_avail: int,
        indirect: bool,
        event_idx: bool,
    ) -> None:
        self.size = size
        self.last_avail = last_avail  # next avail ring slot to read
        self.indirect = indirect
        self.event_idx = event_idx
        self._memory = memory
        self._lock = threading.Lock()
        self._desc: memoryview | None = desc
        self._avail: memoryview | None = avail.cast("H")  # flags, idx, ring[size], used_event
        self._used16: memoryview | None = used.cast("H")  # flags, idx, ..., avail_event
        self._used32: memoryview | None = used[: 4 + 8 * size].cast("I")  # (id, len)[size]
        self._views = (desc, avail, used)
        self.used_idx = self._used16[1]

    def close(self) -> None:
        with self._lock:
            for view in (self._avail, self._used16, self._used32, *self._views):
                if view is not None:
                    view.release()
            self._desc = self._avail = self._used16 = self._used32 = None

    # -- driver → device -----------------------------------------------------------------

    def pop(self) -> Chain | None:
        """The next available chain, or None. Raises RingCorrupt."""
        avail = self._avail
        if avail is None:
            return None
        size = self.size
        pending = (avail[1] - self.last_avail) & 0xFFFF
        if pending == 0:
            return None
        if pending > size:
            raise RingCorrupt(f"avail index moved {pending} entries ahead of a {size}-entry ring")
        head = avail[2 + self.last_avail % size]
        self.last_avail = (self.last_avail + 1) & 0xFFFF
        return self._walk(head)

    def _walk(self, head: int) -> Chain:
        size = self.size
        memory = self._memory
        table = self._desc
        assert table is not None
        if head >= size:
            raise RingCorrupt(f"head index {head} outside a {size}-entry ring")
        readable: list[memoryview] = []
        writable: list[memoryview] = []
        readable_runs = _Runs(memory, readable)
        writable_runs = _Runs(memory, writable)
        error: str | None = None
        table_len = size
        in_indirect = False
        index = head
        seen = 0
        while True:
            seen += 1
            if seen > size:
                raise RingCorrupt(f"chain from head {head} is longer than the queue (a loop?)")
            addr, length, flags, nxt = DESC.unpack_from(table, 16 * index)
            if flags & DESC_F_INDIRECT:
                table = self._indirect_table(head, addr, length, flags, in_indirect)
                table_len = length // 16
                if seen == 1 and table_len >= FLAT_TABLE_MIN:
                    chain = _flat_table(head, memory, table)
                    if chain is not None:
                        return chain
                in_indirect = True
                index = 0
                continue
            # A bad buffer is skipped, not fatal: the rest are still gathered so the device
            # can answer with an error header if the request header and reply space are fine.
            try:
                if flags & DESC_F_WRITE:
                    writable_runs.add(addr, length)
                elif writable or writable_runs.pending:
                    error = error or "a device-readable buffer follows a device-writable one"
                else:
                    readable_runs.add(addr, length)
            except GuestMemoryError as exc:
                error = error or str(exc)
            if not flags & DESC_F_NEXT:
                break
            if nxt >= table_len:
                raise RingCorrupt(f"chain from head {head}: next index {nxt} out of range")
            index = nxt
        readable_runs.flush()
        writable_runs.flush()
        return Chain(head, readable, writable, error)

    def _indirect_table(
        self, head: int, addr: int, length: int, flags: int, nested: bool
    ) -> memoryview:
        if not self.indirect:
            raise RingCorrupt(f"chain from head {head} uses an indirect table not negotiated")
        if nested:
            raise RingCorrupt(f"chain from head {head} nests an indirect table")
        if flags & DESC_F_NEXT:
            raise RingCorrupt(f"chain from head {head}: indirect descriptor also has NEXT")
        if length == 0 or length % 16 or length // 16 > self.size:
            raise RingCorrupt(f"chain from head {head}: indirect table of {length} bytes")
        try:
            return self._memory.view(addr, length)
        except GuestMemoryError as exc:
            raise RingCorrupt(f"chain from head {head}: indirect table: {exc}") from exc

    def pending(self) -> bool:
        """Whether the driver has made chains available that are not popped yet."""
        avail = self._avail
        try:
            return avail is not None and avail[1] != self.last_avail
        except ValueError:
            return False  # released by a concurrent close

    def arm_kick(self) -> bool:
        """Ask the driver to kick for the next buffer; True if one arrived meanwhile, so the
        caller must keep popping instead of sleeping (the classic lost-wakeup window)."""
        avail = self._avail
        used16 = self._used16
        if avail is None or used16 is None:
            return False
        if self.event_idx:
            used16[2 + 4 * self.size] = self.last_avail
            full_fence()
        return avail[1] != self.last_avail

    # -- device → driver -----------------------------------------------------------------

    def push(self, head: int, length: int, call_fd: int) -> None:
        """Return a chain with `length` bytes written, and signal call_fd (-1: none) if the
        driver asked for an interrupt."""
        with self._lock:
            used32 = self._used32
            used16 = self._used16
            if used32 is None or used16 is None:
                return  # the queue was stopped under us; the front-end reset it
            old = self.used_idx
            slot = old % self.size
            used32[1 + 2 * slot] = head
            used32[2 + 2 * slot] = length
            new = (old + 1) & 0xFFFF
            self.used_idx = new
            # TSO: the element above is visible before this index store.
            used16[1] = new
        # Releasing the lock fenced the index store before the used_event load below.
        avail = self._avail
        if avail is None or call_fd < 0:
            return
        try:
            if self.event_idx:
                if not need_event(avail[2 + self.size], new, old):
                    return
            elif avail[0] & AVAIL_F_NO_INTERRUPT:
                return
            os.eventfd_write(call_fd, 1)
        except (OSError, ValueError):
            pass  # the queue was stopped (views released, fd closed) under us
