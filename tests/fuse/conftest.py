"""Fixtures for the protocol-layer tests: a session on a fresh memory share and its kernel."""

from __future__ import annotations

import pytest
from vfsframe_plugins.memory import PLUGIN

from vfsframe.chain import ShareChain
from vfsframe.session import FuseSession, SessionOptions

from .kernel import FakeKernel


def memory_session(options: SessionOptions | None = None, **config: object) -> FuseSession:
    backend = PLUGIN.build(PLUGIN.config(**config), None)
    return FuseSession(ShareChain(backend), options or SessionOptions())


@pytest.fixture
def session() -> FuseSession:
    """A session nobody has sent INIT to yet."""
    return memory_session()


@pytest.fixture
def kernel(session: FuseSession) -> FakeKernel:
    """A kernel that has negotiated the protocol with ``session``."""
    kernel = FakeKernel(session)
    kernel.init()
    return kernel
