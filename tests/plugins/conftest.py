from __future__ import annotations

import pytest
from memfs_helpers import MemFs, make_fs


@pytest.fixture
def fs() -> MemFs:
    return make_fs()
