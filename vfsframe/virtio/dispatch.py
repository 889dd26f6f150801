"""Serving virtqueues: one poller thread per started queue, request work on a worker pool.

The hiprio queue (FORGET, BATCH_FORGET, INTERRUPT) is served inline by its own poller, so it
never waits behind request-queue work; request queues hand each chain to a shared pool, so a
slow request holds only its worker, and completions go back to the used ring in whatever
order they finish.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import queue
import select
import struct
import threading
from collections.abc import Callable, Sequence
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


class WorkerPool:
    """A fixed set of threads running submitted jobs; shared by a device's request queues."""

    def __init__(self, size: int, name: str) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}-worker{i}", daemon=True)
            for i in range(size)
        ]
        for t in self._threads:
            t.start()

    def submit(self, job: Callable[[], None]) -> None:
        self._jobs.put(job)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            job()

    def close(self) -> None:
        for _ in self._threads:
            self._jobs.put(None)
        for t in self._threads:
            t.join()


class QueueService:
    """Pops one queue's chains and serves them until stopped."""

    def __init__(self, vq: VirtQueue, handler: FuseHandler, pool: WorkerPool | None, name: str):
        self.vq = vq
        self.handler = handler
        self.pool = pool
        self.served = 0
        self._stop_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._in_flight = 0
        self._idle = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop popping and wait until every chain already popped has been completed, so
        the used index matches the base index we hand back to the front-end."""
        os.eventfd_write(self._stop_fd, 1)
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()
        with self._idle:
            self._idle.wait_for(lambda: self._in_flight == 0)
        os.close(self._stop_fd)

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._stop_fd, select.POLLIN)
        kick_fd = self.vq.kick_fd
        if kick_fd is not None:
            poller.register(kick_fd, select.POLLIN)
        timeout = None if kick_fd is not None else POLL_INTERVAL_MS
        try:
            while True:
                if not self.vq.broken:
                    self._drain()
                for fd, _ in poller.poll(timeout):
                    if fd == self._stop_fd:
                        return
                    with contextlib.suppress(BlockingIOError):
                        os.eventfd_read(fd)
        except Exception:
            log.exception("queue %d: poller failed; the queue is no longer served", self.vq.index)

    def _drain(self) -> None:
        vq = self.vq
        try:
            while True:
                while (chain := vq.pop()) is not None:
                    self._dispatch(chain)
                if not vq.arm_kick():
                    return
        except QueueBroken as exc:
            log.error("%s; the queue is marked broken until the front-end resets it", exc)

    def _dispatch(self, chain: Chain) -> None:
        with self._idle:
            self._in_flight += 1
        if self.pool is None:
            self._serve(chain)
        else:
            self.pool.submit(lambda: self._serve(chain))

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
        try:
            self.vq.push(chain.head, length)
        finally:
            self.served += 1
            with self._idle:
                self._in_flight -= 1
                if self._in_flight == 0:
                    self._idle.notify_all()
