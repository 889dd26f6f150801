"""The conformance kit against the built-in `memory` backend, on every layer."""

from __future__ import annotations

import pytest

from vfsframe.testing.conformance import BackendConformance, Capabilities

pytestmark = pytest.mark.mount


class TestMemory(BackendConformance):
    capabilities = Capabilities(posix_locks=True, flock_locks=True)

    @pytest.fixture
    def backend_config(self) -> dict[str, object]:
        return {"type": "memory", "capacity": "256MiB"}


class TestMemoryThroughMiddleware(BackendConformance):
    """The same backend wrapped in built-in middleware configured to let every request
    through: middleware must not change what a backend promises. (metrics is left out only
    for time: closing its chain takes 0.5 s, once per check.)"""

    capabilities = Capabilities(posix_locks=True, flock_locks=True)
    middleware = [
        {"type": "log", "path": "/dev/null"},
        {"type": "acl", "default": "allow"},
        {"type": "idmap"},
        {"type": "cache"},
    ]

    @pytest.fixture
    def backend_config(self) -> dict[str, object]:
        return {"type": "memory", "capacity": "256MiB"}
