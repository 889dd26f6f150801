"""Serving virtqueues: each started queue has its own threads.

The hiprio queue (FORGET, BATCH_FORGET, INTERRUPT) has a thread of its own, so it never waits
behind request-queue work; each request queue has a group of threads (see QueueService) that
grows when one is stuck on a slow request, so a slow request holds only its own thread.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import select
import struct
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from vfsframe.virtio.descriptors import Chain, RingCorrupt
from vfsframe.virtio.stallwatch import Load, StallWatch
from vfsframe.virtio.virtqueue import QueueBroken, VirtQueue

try:
    from vfsframe.virtio._split_ring import ChainServer, SplitRing
except ImportError:  # not built: every queue is served in Python (virtqueue says so once)
    ChainServer = SplitRing = None

log = logging.getLogger(__name__)

IN_HEADER_UNIQUE = struct.Struct("<8xQ")  # fuse_in_header: len, opcode, unique, ...
OUT_HEADER = struct.Struct("<IiQ")  # fuse_out_header: len, error, unique
POLL_INTERVAL_MS = 1  # only used when the front-end gave no kick fd (polling mode)
PARALLEL_IO_BYTES = 128 * 1024  # a chain this large (READ/WRITE data) gets company at once


class FuseHandler(Protocol):
    """The FUSE session as the device sees it: request buffers in, reply buffers out."""

    def handle(self, request: Sequence[memoryview], reply: Sequence[memoryview]) -> int: ...

    def abort_waits(self) -> None:
        """End every request blocked in a wait (a lock): the front-end is gone."""
        ...

    def reset(self) -> None: ...


def _read_prefix(views: Sequence[memoryview], size: int) -> bytes:
    out = bytearray()
    for v in views:
        out += v[: size - len(out)]
        if len(out) >= size:
            break
    return bytes(out)


def _scatter(views: Sequence[memoryview], data: bytes) -> int:
    done = 0
    for v in views:
        if done == len(data):
            break
        n = min(len(v), len(data) - done)
        v[:n] = data[done : done + n]
        done += n
    return done


def error_reply(chain: Chain, err: int) -> int:
    """Answer a chain with a bare FUSE error header; the used length (0 if impossible: no
    readable header to take `unique` from, or no room for the reply)."""
    head = _read_prefix(chain.readable, IN_HEADER_UNIQUE.size)
    if len(head) < IN_HEADER_UNIQUE.size or sum(map(len, chain.writable)) < OUT_HEADER.size:
        return 0
    (unique,) = IN_HEADER_UNIQUE.unpack(head)
    return _scatter(chain.writable, OUT_HEADER.pack(OUT_HEADER.size, -err, unique))


class QueueService:
    """Serves one queue with a group of threads, each popping chains and serving them itself.

    Idle threads wait on the kick eventfd with EPOLLEXCLUSIVE, so a kick wakes one of them,
    and that thread serves what it pops, then pops again until the ring is empty: no thread
    switch on the common path. Requests that arrive while it serves wait for it, unless it
    stays busy on one request for long: then the device's StallWatch calls `rescue`, which
    wakes an idle thread or starts a new one (up to `max_threads`). Completions land in the
    used ring in whatever order they finish.
    """

    def __init__(
        self,
        vq: VirtQueue,
        handler: FuseHandler,
        max_threads: int,
        name: str,
        watch: StallWatch | None = None,
    ) -> None:
        self.vq = vq
        self.handler = handler
        self.name = name
        self.max_threads = max(1, max_threads)
        self.watch = watch
        self._stop_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._stopping = False
        self._pop_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._served: list[int] = []
        # Per thread, each written only by its own thread: when it started serving its
        # current chain (monotonic; 0.0 when not serving), whether it is waiting for a kick,
        # and whether it has started popping at all.
        self._busy_since: list[float] = []
        self._idle: list[bool] = []
        self._started: list[bool] = []
        self._threads_lock = threading.Lock()  # spawning vs stopping
        if vq.kick_fd is not None:
            # Several threads read it; a blocking read by the one that lost the race would
            # hang. (The flag is shared with the front-end's copy, which only writes to it.)
            os.set_blocking(vq.kick_fd, False)

    @property
    def served(self) -> int:
        return sum(self._served)

    @property
    def threads(self) -> int:
        return len(self._threads)

    def start(self) -> None:
        if self.watch is not None:
            self.watch.add(self)
        self._spawn()

    def _spawn(self) -> None:
        with self._threads_lock:
            if self._stopping:
                return
            slot = len(self._threads)
            self._served.append(0)
            self._busy_since.append(0.0)
            self._idle.append(False)
            self._started.append(False)
            thread = threading.Thread(
                target=self._run, args=(slot,), name=f"{self.name}.{slot}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def stop(self) -> None:
        """Stop popping and wait until every chain already popped has been completed, so
        the used index matches the base index we hand back to the front-end."""
        with self._threads_lock:
            self._stopping = True
            threads = list(self._threads)
        if self.watch is not None:
            self.watch.remove(self)
        os.eventfd_write(self._stop_fd, 1)  # stays readable, and not exclusive: wakes all
        for t in threads:
            if t is not threading.current_thread():
                t.join()
        os.close(self._stop_fd)

    def rescue(self, now: float, stall: float) -> Load:
        """Called by the StallWatch: if chains wait while every serving thread has been on
        its request for `stall` seconds, wake an idle thread or start one."""
        started = [t for t in self._busy_since if t]
        if not started:
            return Load.IDLE
        if self._stopping or not self.vq.pending():
            return Load.SERVING
        if now - max(started) < stall:
            pass  # not stuck yet
        elif not all(self._started):
            pass  # help is on its way
        elif any(self._idle):
            self._wake_idle()
        elif len(self._threads) < self.max_threads:
            log.debug("%s: all %d threads busy; starting another", self.name, self.threads)
            self._spawn()
        return Load.WAITING

    def _wake_idle(self) -> None:
        """Wake one idle thread (they wait on the kick fd with EPOLLEXCLUSIVE)."""
        if self.vq.kick_fd is not None:
            os.eventfd_write(self.vq.kick_fd, 1)

    def _run(self, slot: int) -> None:
        try:
            self._loop(slot)
        except Exception:
            self._started[slot] = True  # not coming: do not wait for it
            # E.g. a kick "eventfd" that cannot be polled. Never let a thread die silently.
            self.vq.broken = "queue thread failed"
            log.exception("queue %d: thread failed; the queue is marked broken", self.vq.index)

    def _loop(self, slot: int) -> None:
        kick_fd = self.vq.kick_fd
        serve_one = self._serving_step(slot)
        with select.epoll() as ep:
            ep.register(self._stop_fd, select.EPOLLIN)
            if kick_fd is not None:
                ep.register(kick_fd, select.EPOLLIN | select.EPOLLEXCLUSIVE)
            timeout = -1 if kick_fd is not None else POLL_INTERVAL_MS / 1000
            idle = self._idle
            self._started[slot] = True
            while not self._stopping:
                if serve_one():
                    continue
                # The ring is empty and the guest will kick for the next chain. Clear the
                # kick only now, not when woken: a request waits for neither this system
                # call nor the Python around it. A kick consumed here may announce a chain
                # that came after the last look, so look again before sleeping.
                if kick_fd is not None:
                    try:
                        os.eventfd_read(kick_fd)
                        continue
                    except BlockingIOError:
                        pass
                idle[slot] = True
                ep.poll(timeout)
                idle[slot] = False

    def _serving_step(self, slot: int) -> Callable[[], bool]:
        """What serves the next chain for thread `slot`: the C ChainServer when the queue's
        ring is the C one, else the same steps in Python (_serve_one)."""
        ring = self.vq.ring
        if ChainServer is None or not isinstance(ring, SplitRing):
            return functools.partial(self._serve_one, slot)
        return ChainServer(
            ring=ring,
            queue=self.vq,
            handle=self.handler.handle,
            fallback=self._answer_badly,
            pop_failed=self._pop_failed,
            wake_idle=self._wake_idle,
            busy_since=self._busy_since,
            idle=self._idle,
            served=self._served,
            watch=self.watch,
            slot=slot,
            parallel_bytes=PARALLEL_IO_BYTES,
        ).serve_one

    def _serve_one(self, slot: int) -> bool:
        """Pop one chain and serve it; False if none was available (ChainServer in Python)."""
        chain = self._take()
        if chain is None:
            return False
        if chain.size >= PARALLEL_IO_BYTES and any(self._idle) and self.vq.pending():
            # Large I/O runs mostly outside the GIL (preadv/pwritev, copies): worth a second
            # thread at once for what waits behind it.
            self._wake_idle()
        self._busy_since[slot] = time.monotonic()
        watch = self.watch
        if watch is not None and not watch.armed:
            watch.arm()
        try:
            if chain.error is None:
                length = self.handler.handle(chain.readable, chain.writable)
                room = sum(map(len, chain.writable))
                if not (isinstance(length, int) and 0 <= length <= room):
                    length = self._answer_badly(chain, None, length)
            else:
                length = self._answer_badly(chain, None, None)
        except Exception as exc:
            length = self._answer_badly(chain, exc, None)
        finally:
            chain.release()
        self.vq.push(chain.head, length)
        self._busy_since[slot] = 0.0
        self._served[slot] += 1
        return True

    def _take(self) -> Chain | None:
        """Pop the next chain, or None (nothing available, queue broken, or stopping)."""
        vq = self.vq
        with self._pop_lock:
            if self._stopping or vq.broken:
                return None
            try:
                chain = vq.pop()
                if chain is None and vq.arm_kick():
                    chain = vq.pop()  # arrived while re-arming: no kick will announce it
                return chain
            except Exception as exc:
                self._pop_failed(exc)
            return None

    def _pop_failed(self, exc: Exception) -> None:
        if isinstance(exc, RingCorrupt):
            exc = self.vq.mark_broken(str(exc))
        if isinstance(exc, QueueBroken):
            log.error("%s; the queue is marked broken until the front-end resets it", exc)
        else:
            self.vq.broken = "internal error"
            log.error(
                "queue %d: cannot pop; the queue is marked broken", self.vq.index, exc_info=exc
            )

    def _answer_badly(self, chain: Chain, exc: BaseException | None, length: object) -> int:
        """The used length for a chain the session did not answer normally: a bad chain, a
        request that raised, or a length it cannot have written."""
        index = self.vq.index
        if chain.error is not None:
            log.warning("queue %d: bad request chain (%s)", index, chain.error)
        elif exc is not None:
            log.error("queue %d: request failed", index, exc_info=exc)
        else:
            room = sum(map(len, chain.writable))
            log.error(
                "queue %d: session reported %r bytes written into %d; using 0", index, length, room
            )
            return 0
        return error_reply(chain, errno.EIO)
