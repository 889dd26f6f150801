"""Fixtures for the virtio device tests: a stub FUSE session and a test front-end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from vfsframe.testing.virtio_driver import TestFrontEnd
from vfsframe.virtio import virtqueue
from vfsframe.virtio._split_ring import SplitRing
from vfsframe.virtio.device import VhostUserFsDevice
from vfsframe.virtio.split_ring import PyRing

from .stub_session import StubSession


@pytest.fixture(params=[SplitRing, PyRing], ids=["c-ring", "py-ring"])
def ring_implementation(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> type:
    """Serve the queues with each ring implementation in turn (modules opt in)."""
    monkeypatch.setattr(virtqueue, "RING_IMPLEMENTATION", request.param)
    return request.param


@pytest.fixture
def session() -> StubSession:
    return StubSession()


@pytest.fixture
def make_frontend(session: StubSession) -> Iterator:
    made: list[TestFrontEnd] = []

    def make(request_queues: int = 1, workers: int = 4, queue_size: int = 64) -> TestFrontEnd:
        device = VhostUserFsDevice(
            session, request_queues=request_queues, workers=workers, name="test"
        )
        fe = TestFrontEnd(device, queue_size=queue_size)
        made.append(fe)
        return fe

    yield make
    session.release_slow.set()
    for fe in made:
        fe.close()
