from __future__ import annotations

import pytest

from tests.plugins.memfs_helpers import MemFs, make_fs


@pytest.fixture
def fs() -> MemFs:
    return make_fs()
