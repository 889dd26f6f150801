"""Watching request queues for a thread stuck on a slow request while other requests wait.

A queue's thread serves the chains it pops one after another, with no hand-off to another
thread: under the GIL, waking a second thread for every waiting request costs more (a
futex wake-up and a GIL hand-over per system call) than the parallelism it buys for the fast
requests that make up most of a metadata workload. Only when the thread has been busy for
longer than STALL_SECONDS with requests still waiting does this watch call for help (see
QueueService.rescue): an idle thread is woken, or a new one started up to the queue's limit.
So a slow read, a slow backend or a blocking lock delays the requests queued behind it by at
most about two ticks, never indefinitely.

The watch sleeps on an event while no queue thread is busy, and ticks every TICK_SECONDS
while some are; it goes back to sleep after IDLE_TICKS ticks without a busy thread.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

log = logging.getLogger(__name__)

TICK_SECONDS = 0.001
STALL_SECONDS = 0.001
IDLE_TICKS = 100


class Rescuable(Protocol):
    def rescue(self, now: float, stall: float) -> bool:
        """Help a stalled queue along; True while one of its threads is busy."""
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
        idle = 0
        while not self._stopping:
            time.sleep(TICK_SECONDS)
            now = time.monotonic()
            with self._lock:
                services = list(self._services)
            busy = False
            for service in services:
                busy = service.rescue(now, STALL_SECONDS) or busy
            idle = 0 if busy else idle + 1
            if idle < IDLE_TICKS:
                continue
            # Disarm, then look once more: a thread that became busy in between either sees
            # armed False and arms again, or is seen busy here.
            self.armed = False
            self._wake.clear()
            if not any(service.rescue(time.monotonic(), STALL_SECONDS) for service in services):
                return
            self.armed = True
            idle = 0
