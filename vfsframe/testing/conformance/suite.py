"""``BackendConformance``: the base class a backend's test class derives from."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import pytest

from vfsframe.testing.conformance.capabilities import Capabilities
from vfsframe.testing.conformance.check_data import DataChecks
from vfsframe.testing.conformance.check_errors import ErrnoChecks
from vfsframe.testing.conformance.check_locks import ChainLockChecks, LockChecks
from vfsframe.testing.conformance.check_namespace import ListingOffsetChecks, NamespaceChecks
from vfsframe.testing.conformance.check_seed import SeedChecks
from vfsframe.testing.conformance.drivers import Driver
from vfsframe.testing.conformance.marks import LAYERS
from vfsframe.testing.conformance.serving import served, share_for


class BackendConformance(
    NamespaceChecks,
    ListingOffsetChecks,
    DataChecks,
    ErrnoChecks,
    SeedChecks,
    LockChecks,
    ChainLockChecks,
):
    """Every conformance check, run once per layer against a fresh backend.

    Subclass it in a ``Test*`` class, set ``capabilities`` and define the ``backend_config``
    fixture (a backend table, as a dict or TOML text)::

        class TestMyBackend(BackendConformance):
            capabilities = Capabilities(xattrs=False)

            @pytest.fixture
            def backend_config(self, tmp_path):
                return {"type": "mine", "root": str(tmp_path)}

    Checks whose needs the capabilities or the layer do not meet are deselected at collection
    and listed as not applicable at the end of the run.
    """

    capabilities: ClassVar[Capabilities] = Capabilities()
    #: Which layers to run every check on (see ``marks.LAYERS``).
    layers: ClassVar[tuple[str, ...]] = LAYERS
    #: Middleware tables wrapped around the backend, outermost first.
    middleware: ClassVar[list[dict[str, Any]]] = []
    #: Other share options (``cache``, ``writeback_cache``, ...).
    share_options: ClassVar[dict[str, Any]] = {}

    @pytest.fixture
    def backend_config(self) -> Mapping[str, Any] | str:
        raise NotImplementedError(
            f"{type(self).__name__} must define a `backend_config` fixture returning the "
            "backend table (a dict or TOML text)"
        )

    @pytest.fixture
    def vfs(self, vfs_layer: str, backend_config: Mapping[str, Any] | str) -> Iterator[Driver]:
        """The share under test on one layer, fresh for each check."""
        share = share_for(vfs_layer, backend_config, self.middleware, self.share_options)
        with served(vfs_layer, share) as driver:
            yield driver
