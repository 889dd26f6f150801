"""Split virtqueues: the state vhost-user sets up (size, addresses, base index, fds), and the
ring implementation that serves the data path once the queue is attached to guest memory.

Two implementations serve the data path with identical results: the C module _split_ring
(the default) and split_ring.PyRing (the reference, used when the C module was not built,
or when VFSFRAME_RING=python asks for it). A corrupt ring marks the queue broken and
signals the front-end's error fd; the queue stays broken until it is set up again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from typing import Protocol

from vfsframe.virtio.descriptors import Chain, RingCorrupt
from vfsframe.virtio.memory import GuestMemory, GuestMemoryError
from vfsframe.virtio.split_ring import PyRing

log = logging.getLogger(__name__)

MAX_QUEUE_SIZE = 32768


class Ring(Protocol):
    """What both ring implementations offer (see split_ring.PyRing for each method)."""

    @property
    def last_avail(self) -> int: ...
    @property
    def used_idx(self) -> int: ...
    def pop(self) -> Chain | None: ...
    def push(self, head: int, length: int, call_fd: int) -> None: ...
    def arm_kick(self) -> bool: ...
    def pending(self) -> bool: ...
    def close(self) -> None: ...


def _ring_implementation() -> type:
    if os.environ.get("VFSFRAME_RING", "native") == "python":
        return PyRing
    try:
        from vfsframe.virtio._split_ring import SplitRing
    except ImportError as exc:
        log.warning("the C ring module is not built (%s); serving rings in Python", exc)
        return PyRing
    return SplitRing


RING_IMPLEMENTATION: type = _ring_implementation()


class QueueBroken(Exception):
    """The ring itself is corrupt; the queue must not be served until it is set up again."""


class VirtQueue:
    """One split virtqueue. Set up by vhost-user messages (size, addresses, base index, fds),
    attached to guest memory, then popped by one poller thread and pushed by any thread."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.size = 0
        self.desc_addr = self.avail_addr = self.used_addr = 0
        self.addresses_set = False
        self._last_avail = 0  # next avail ring slot to read (SET/GET_VRING_BASE) when detached
        self.event_idx = False
        self.indirect = False
        self.enabled = True  # see VhostUserFsDevice._maybe_start
        self.polling = False  # no kick fd: poll the avail index instead
        self.kick_fd: int | None = None
        self.call_fd: int | None = None
        self.err_fd: int | None = None
        self.broken: str | None = None
        self._ring: Ring | None = None
        self._lock = threading.Lock()

    # -- setup ---------------------------------------------------------------------------

    def set_size(self, size: int) -> None:
        if not 0 < size <= MAX_QUEUE_SIZE or size & (size - 1):
            raise ValueError(f"queue {self.index}: size {size} is not a power of 2 up to 32768")
        self.size = size

    def set_addresses(self, desc: int, avail: int, used: int) -> None:
        # virtio alignment rules; they also keep our u16/u32 ring accesses single loads/stores.
        if desc % 16 or avail % 2 or used % 4:
            raise ValueError(f"queue {self.index}: misaligned ring addresses")
        self.desc_addr, self.avail_addr, self.used_addr = desc, avail, used
        self.addresses_set = True

    @property
    def last_avail(self) -> int:
        ring = self._ring
        return ring.last_avail if ring is not None else self._last_avail

    @last_avail.setter
    def last_avail(self, value: int) -> None:
        if self._ring is not None:
            raise ValueError(f"queue {self.index}: base index set while the ring runs")
        self._last_avail = value

    def attach(self, memory: GuestMemory) -> None:
        """Map the rings (front-end virtual addresses) in memory. Raises GuestMemoryError."""
        size = self.size
        if not size or not self.addresses_set:
            raise GuestMemoryError(f"queue {self.index} has no size or addresses")
        ring = RING_IMPLEMENTATION(
            memory,
            size,
            memory.user_view(self.desc_addr, 16 * size),
            memory.user_view(self.avail_addr, 6 + 2 * size),
            memory.user_view(self.used_addr, 6 + 8 * size),
            self._last_avail,
            self.indirect,
            self.event_idx,
        )
        with self._lock:
            self._ring = ring
            self.broken = None

    def detach(self) -> None:
        with self._lock:
            ring, self._ring = self._ring, None
            if ring is not None:
                self._last_avail = ring.last_avail
                ring.close()

    @property
    def attached(self) -> bool:
        return self._ring is not None

    @property
    def ring(self) -> Ring | None:
        """The ring serving the queue while it is attached."""
        return self._ring

    # -- the data path -------------------------------------------------------------------

    def pop(self) -> Chain | None:
        """The next available chain, or None. Raises QueueBroken on a corrupt ring."""
        ring = self._ring
        if ring is None or self.broken:
            return None
        try:
            return ring.pop()
        except RingCorrupt as exc:
            raise self.mark_broken(str(exc)) from None

    def mark_broken(self, why: str) -> QueueBroken:
        """Stop serving the queue until it is set up again, and tell the front-end."""
        self.broken = why
        if self.err_fd is not None:
            with contextlib.suppress(OSError):
                os.eventfd_write(self.err_fd, 1)
        return QueueBroken(f"queue {self.index}: {why}")

    def pending(self) -> bool:
        """Whether the driver has made chains available that are not popped yet."""
        ring = self._ring
        return ring is not None and ring.pending()

    def arm_kick(self) -> bool:
        """Ask the driver to kick for the next buffer; True if one arrived meanwhile, so the
        caller must keep popping instead of sleeping (the classic lost-wakeup window)."""
        ring = self._ring
        return ring is not None and ring.arm_kick()

    def push(self, head: int, length: int) -> None:
        """Return a chain with `length` bytes written, and interrupt the driver if it asked."""
        ring = self._ring
        if ring is not None:
            call_fd = self.call_fd
            ring.push(head, length, -1 if call_fd is None else call_fd)
