"""Guest tests boot a real Linux guest under QEMU (TCG) against real virtio-fs servers.

They need what .ci/install-guest.sh installs (QEMU, busybox-static, the reference virtiofsd)
and fetch the guest kernel on first use. Select or skip them with `-m guest` / `-m "not guest"`.
Helpers (server kinds, the workload script) live in `servers.py`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from vfsframe.testing.guestvm import fetch_kernel

from .servers import Server


@pytest.fixture(scope="session")
def kernel() -> Path:
    return fetch_kernel()


@pytest.fixture(scope="session")
def guest_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Unix socket paths are limited to 108 bytes; pytest's tmp paths can come close.
    return tmp_path_factory.mktemp("guest")


@pytest.fixture
def running() -> Iterator[list[Server]]:
    """Servers a test starts; all stopped (by their pid) at the end, whatever happened."""
    servers: list[Server] = []
    yield servers
    for server in servers:
        server.stop()
