"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from vfsframe.testing.mount import mounted_share, share_config


def require_fuse() -> None:
    """Mount tests need root and /dev/fuse; fail loudly rather than skip silently."""
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        pytest.fail("mount tests need root and /dev/fuse (run the suite as root)")


@pytest.fixture
def mountpoint() -> Iterator[Path]:
    """An empty directory that every user can reach (tests switch uids), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="vfsframe-test-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        path.rmdir()


@pytest.fixture
def memory_mount(mountpoint: Path) -> Iterator[Path]:
    """A memory share mounted through the host kernel."""
    require_fuse()
    share = share_config({"type": "memory", "capacity": "2GiB"})
    with mounted_share(mountpoint, share):
        yield mountpoint
