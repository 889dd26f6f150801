"""How a request queue uses threads: one serves everything while requests are quick; another
is woken or started only when it is stuck on a slow request and others wait (StallWatch)."""

from __future__ import annotations

import time

import pytest

from vfsframe.testing.virtio_driver import TestFrontEnd

from .stub_session import OP_SLOW, OUT_HEADER, StubSession, in_request

OP_GETATTR = 3

pytestmark = pytest.mark.usefixtures("ring_implementation")


def submit(fe: TestFrontEnd, opcode: int, unique: int) -> tuple[int, int]:
    """Publish one request on queue 1; (head, reply buffer address)."""
    req = in_request(opcode, unique)
    rd = fe.alloc(len(req), req)
    wr = fe.alloc(64)
    return fe.add_chain(1, [(rd, len(req))], [(wr, 64)]), wr


def service_threads(fe: TestFrontEnd) -> int:
    assert fe.device is not None
    return fe.device.services[1].threads


def test_quick_requests_are_served_by_one_thread(make_frontend) -> None:
    fe = make_frontend(workers=8)
    fe.start()
    for unique in range(1, 201):
        head, _ = submit(fe, OP_GETATTR, unique)
        assert fe.wait_used(1)[0][0] == head
    assert service_threads(fe) == 1


def test_request_behind_a_stuck_one_is_served_by_another_thread(
    make_frontend, session: StubSession
) -> None:
    fe = make_frontend(workers=8)
    fe.start()
    slow_head, _ = submit(fe, OP_SLOW, 1)
    assert session.slow_started.acquire(timeout=10)
    started = time.monotonic()
    fast_head, wr = submit(fe, OP_GETATTR, 2)
    ((head, length),) = fe.wait_used(1)
    assert head == fast_head, "the quick request waited for the stuck one"
    assert OUT_HEADER.unpack_from(fe.read(wr, length))[2] == 2
    assert time.monotonic() - started < 5
    assert service_threads(fe) == 2
    session.release_slow.set()
    assert fe.wait_used(1) == [(slow_head, OUT_HEADER.size)]


def test_threads_grow_with_stuck_requests_up_to_the_limit(
    make_frontend, session: StubSession
) -> None:
    fe = make_frontend(workers=3)
    fe.start()
    slow = [submit(fe, OP_SLOW, unique)[0] for unique in (1, 2, 3, 4)]
    for _ in range(3):  # three threads, each stuck on one; the fourth request waits
        assert session.slow_started.acquire(timeout=10)
    assert not session.slow_started.acquire(timeout=0.3)
    assert service_threads(fe) == 3
    session.release_slow.set()
    assert session.slow_started.acquire(timeout=10)  # the fourth runs once one is free
    done = fe.wait_used(1, 4)
    assert sorted(head for head, _ in done) == sorted(slow)
    assert service_threads(fe) == 3
