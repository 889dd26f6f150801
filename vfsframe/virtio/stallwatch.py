"""Watching request queues for a thread stuck on a slow request while other requests wait.

A queue's thread serves the chains it pops one after another, with no hand-off to another
thread: under the GIL, waking a second thread for every waiting request costs more (a
futex wake-up and a GIL hand-over per system call) than the parallelism it buys for the fast
requests that make up most of a metadata workload. Only when the thread has been busy for
longer than STALL_SECONDS with requests still waiting does this watch call for help (see
QueueService.rescue): an idle thread is woken, or a new one started up to the queue's limit.
So a slow read, a slow backend or a blocking lock delays the requests queued behind it by at
most about two ticks, never indefinitely.

The watch sleeps on an event while no queue thread is busy. While some are, it ticks every
TICK_SECONDS if chains wait behind them, and every QUIET_TICK_SECONDS if none do: a chain that
arrives behind a stuck thread is seen within one quiet tick and rescued at most a tick later.
Ticking fast all the time cost more than a guest's requests did: on the development machine a
1 ms tick took 3% of a core, for every request of a serial workload at once. The watch goes
back to sleep after IDLE_SECONDS without a busy thread.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from typing import Protocol

log = logging.getLogger(__name__)

TICK_SECONDS = 0.001
QUIET_TICK_SECONDS = 0.02
STALL_SECONDS = 0.001
IDLE_SECONDS = 0.1


class Load(enum.IntEnum):
    """What a watched queue is doing, as its rescue() found it."""

    IDLE = 0  # no thread is serving
    SERVING = 1  # a thread is serving and no chain waits
    WAITING = 2  # chains wait while every serving thread is on its request


class Rescuable(Protocol):
    def rescue(self, now: float, stall: float) -> Load:
        """Help a stalled queue along; say what the queue is doing."""
        ...


class StallWatch:
    """One thread per device, ticking only while some queue thread is serving."""

    def __init__(self, name: str) -> None:
        self.armed = False  # read without a lock by the queue threads: a hint, re-checked
        self._services: list[Rescuable] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"{name}-watch", daemon=True)
        self._thread.start()

    def add(self, service: Rescuable) -> None:
        with self._lock:
            self._services.append(service)

    def remove(self, service: Rescuable) -> None:
        with self._lock:
            if service in self._services:
                self._services.remove(service)

    def arm(self) -> None:
        """A queue thread started serving: tick until no thread is busy any more."""
        self.armed = True
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait()
            try:
                self._tick_until_idle()
            except Exception:  # the watch must outlive any one bad tick
                log.exception("stall watch tick failed")

    def _tick_until_idle(self) -> None:
        interval = TICK_SECONDS
        idle_since = time.monotonic()
        while not self._stopping:
            time.sleep(interval)
            now = time.monotonic()
            load = self._rescue_all(now)
            interval = TICK_SECONDS if load is Load.WAITING else QUIET_TICK_SECONDS
            if load is not Load.IDLE:
                idle_since = now
            if now - idle_since < IDLE_SECONDS:
                continue
            # Disarm, then look once more: a thread that became busy in between either sees
            # armed False and arms again, or is seen busy here.
            self.armed = False
            self._wake.clear()
            if self._rescue_all(time.monotonic()) is Load.IDLE:
                return
            self.armed = True
            idle_since = time.monotonic()

    def _rescue_all(self, now: float) -> Load:
        with self._lock:
            services = list(self._services)
        return max((service.rescue(now, STALL_SECONDS) for service in services), default=Load.IDLE)
