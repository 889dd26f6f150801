"""Sandbox tests: unit tests of the plan and the wrappers, and guest tests (marked `guest`)
that boot a real Linux guest against a sandboxed `vfsframe serve`."""

from __future__ import annotations

from pathlib import Path

import pytest

from vfsframe.testing.guestvm import fetch_kernel


@pytest.fixture(scope="session")
def kernel() -> Path:
    return fetch_kernel()
