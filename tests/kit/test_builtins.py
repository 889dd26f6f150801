"""The conformance kit against the other built-in backends, each on every layer.

Capabilities are what each backend's manual (docs/backends/) promises; a check the kit
deselects is listed at the end of the run with the reason.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vfsframe.testing.conformance import BackendConformance, Capabilities, default_seed

pytestmark = pytest.mark.mount

SEED = default_seed()


def seeded_dir(root: Path) -> str:
    root.mkdir()
    SEED.write_to(root)
    return str(root)


class TestPassthrough(BackendConformance):
    capabilities = Capabilities(posix_locks=True, flock_locks=True)

    @pytest.fixture
    def backend_config(self, tmp_path: Path) -> dict[str, object]:
        return {"type": "passthrough", "root": str(tmp_path)}


class TestPassthroughReadOnly(BackendConformance):
    """A read-only passthrough of a host directory holding the kit's seed."""

    capabilities = Capabilities.read_only(SEED, hard_links=True, symlinks=True, xattrs=True)

    @pytest.fixture
    def backend_config(self, tmp_path: Path) -> str:
        return f'type = "passthrough"\nroot = "{seeded_dir(tmp_path / "seed")}"\nreadonly = true'


class TestObjectStore(BackendConformance):
    """The objectstore backend over its `local` store: no hard links, no RENAME_EXCHANGE and
    no kept atime, as docs/backends/objectstore.md says."""

    capabilities = Capabilities(hard_links=False, rename_exchange=False, utimens=False)

    @pytest.fixture
    def backend_config(self, tmp_path: Path) -> dict[str, object]:
        store = {"type": "local", "root": str(tmp_path / "objects"), "fsync": False}
        return {"type": "objectstore", "store": store, "staging_dir": str(tmp_path)}


class TestOverlayOverMemory(BackendConformance):
    """An overlay with an empty memory lower layer and a memory upper layer."""

    capabilities = Capabilities()

    @pytest.fixture
    def backend_config(self) -> dict[str, object]:
        return {"type": "overlay", "lower": [{"type": "memory"}], "upper": {"type": "memory"}}


class TestOverlayOverSeededPassthrough(BackendConformance):
    """A writable overlay whose read-only passthrough lower layer holds the seed: the seed
    checks read through the overlay, the write checks copy up into the memory upper layer."""

    capabilities = Capabilities(seed=SEED)

    @pytest.fixture
    def backend_config(self, tmp_path: Path) -> dict[str, object]:
        lower = {"type": "passthrough", "root": seeded_dir(tmp_path / "seed"), "readonly": True}
        return {"type": "overlay", "lower": [lower], "upper": {"type": "memory"}}
