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
