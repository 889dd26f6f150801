"""Serving virtqueues: each started queue has its own threads.

The hiprio queue (FORGET, BATCH_FORGET, INTERRUPT) has a thread of its own, so it never waits
behind request-queue work; each request queue has a group of threads (see QueueService), so a
slow request holds only its own thread.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import struct
import threading
from collections.abc import Sequence
from typing import Protocol

from vfsframe.virtio.virtqueue import Chain, QueueBroken, VirtQueue

log = logging.getLogger(__name__)

IN_HEADER_UNIQUE = struct.Struct("<8xQ")  # fuse_in_header: len, opcode, unique, ...
OUT_HEADER = struct.Struct("<IiQ")  # fuse_out_header: len, error, unique
POLL_INTERVAL_MS = 1  # only used when the front-end gave no kick fd (polling mode)


class FuseHandler(Protocol):
    """The FUSE session as the device sees it: request buffers in, reply buffers out."""

    def handle(self, request: Sequence[memoryview], reply: Sequence[memoryview]) -> int: ...

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
    if len(head) < IN_HEADER_UNIQUE.size or sum(len(v) for v in chain.writable) < OUT_HEADER.size:
        return 0
    (unique,) = IN_HEADER_UNIQUE.unpack(head)
    return _scatter(chain.writable, OUT_HEADER.pack(OUT_HEADER.size, -err, unique))


class QueueService:
    """Serves one queue with a group of threads, each popping chains and serving them itself.

    Idle threads all wait on the kick eventfd with EPOLLEXCLUSIVE, so a kick wakes one of
    them, and that thread serves what it pops without handing it to another thread: the
    common single-request path has no thread switch. After each pop the driver is asked to
    kick again for the next buffer, so a request arriving while a slow one is served wakes
    another idle thread; if buffers are already waiting, the popping thread kicks the queue
    itself. Completions land in the used ring in whatever order they finish.
    """

    def __init__(self, vq: VirtQueue, handler: FuseHandler, threads: int, name: str) -> None:
        self.vq = vq
        self.handler = handler
        self._stop_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._stopping = False
        self._pop_lock = threading.Lock()
        self._served = [0] * threads
        self._threads = [
            threading.Thread(target=self._run, args=(i,), name=f"{name}.{i}", daemon=True)
            for i in range(threads)
        ]
        if vq.kick_fd is not None:
            # Several threads read it; a blocking read by the one that lost the race would
            # hang. (The flag is shared with the front-end's copy, which only writes to it.)
            os.set_blocking(vq.kick_fd, False)

    @property
    def served(self) -> int:
        return sum(self._served)

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        """Stop popping and wait until every chain already popped has been completed, so
        the used index matches the base index we hand back to the front-end."""
        self._stopping = True
        os.eventfd_write(self._stop_fd, 1)  # stays readable, and not exclusive: wakes all
        for t in self._threads:
            if t is not threading.current_thread():
                t.join()
        os.close(self._stop_fd)

    def _run(self, slot: int) -> None:
        try:
            self._loop(slot)
        except Exception:
            # E.g. a kick "eventfd" that cannot be polled. Never let a thread die silently.
            self.vq.broken = "queue thread failed"
            log.exception("queue %d: thread failed; the queue is marked broken", self.vq.index)

    def _loop(self, slot: int) -> None:
        kick_fd = self.vq.kick_fd
        with select.epoll() as ep:
            ep.register(self._stop_fd, select.EPOLLIN)
            if kick_fd is not None:
                ep.register(kick_fd, select.EPOLLIN | select.EPOLLEXCLUSIVE)
            timeout = -1 if kick_fd is not None else POLL_INTERVAL_MS / 1000
            while not self._stopping:
                chain = self._take()
                if chain is not None:
                    self._serve(chain)
                    self._served[slot] += 1
                    continue
                for fd, _ in ep.poll(timeout):
                    if fd == kick_fd:
                        with contextlib.suppress(BlockingIOError):
                            os.eventfd_read(fd)

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
                if chain is not None and vq.arm_kick() and vq.kick_fd is not None:
                    os.eventfd_write(vq.kick_fd, 1)  # more waiting: wake another thread
                return chain
            except QueueBroken as exc:
                log.error("%s; the queue is marked broken until the front-end resets it", exc)
            except Exception:
                vq.broken = "internal error"
                log.exception("queue %d: cannot pop; the queue is marked broken", vq.index)
            return None

    def _serve(self, chain: Chain) -> None:
        length = 0
        try:
            if chain.error is not None:
                log.warning("queue %d: bad request chain (%s)", self.vq.index, chain.error)
                length = error_reply(chain, errno.EIO)
            else:
                length = self.handler.handle(chain.readable, chain.writable)
                room = sum(len(v) for v in chain.writable)
                if not 0 <= length <= room:
                    log.error(
                        "queue %d: session reported %d bytes written into %d; using 0",
                        self.vq.index,
                        length,
                        room,
                    )
                    length = 0
        except Exception:
            log.exception("queue %d: request failed", self.vq.index)
            length = error_reply(chain, errno.EIO)
        finally:
            chain.release()
        self.vq.push(chain.head, length)
