"""The kit itself: it fails backends that break the rules, and it lists, rather than passes,
the checks a backend's declaration rules out. Each case runs pytest on a generated test file,
as a plugin author's suite would run (the kit loaded through its pytest11 entry point)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BROKEN_BACKENDS = """
import os
import pytest
from vfsframe.chain import ShareChain
from vfsframe.testing.conformance import BackendConformance, Capabilities, ChainDriver
from vfsframe_plugins.memory import MemoryBackend, MemoryConfig


class DropsAnEntry(MemoryBackend):
    def vfs_readdir(self, req):
        return list(super().vfs_readdir(req))[:-1]


class IgnoresAppend(MemoryBackend):
    def vfs_write(self, req):
        req.flags &= ~os.O_APPEND
        return super().vfs_write(req)


class BrokenChain(BackendConformance):
    layers = ("inprocess",)
    backend_class = MemoryBackend

    @pytest.fixture
    def vfs(self, vfs_layer):
        chain = ShareChain(self.backend_class(MemoryConfig()))
        yield ChainDriver(chain)
        chain.close()


class TestDropsAnEntry(BrokenChain):
    backend_class = DropsAnEntry


class TestIgnoresAppend(BrokenChain):
    backend_class = IgnoresAppend
"""

WRONG_DECLARATION = '''
import pytest
from vfsframe.testing.conformance import BackendConformance, Capabilities, default_seed


class TestMemoryClaimsASeed(BackendConformance):
    """An empty memory backend declared read-only with content it does not have."""

    layers = ("inprocess",)
    capabilities = Capabilities.read_only(default_seed())

    @pytest.fixture
    def backend_config(self):
        return {"type": "memory"}
'''


def run_pytest(tmp_path: Path, source: str) -> str:
    (tmp_path / "test_generated.py").write_text(source)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider", "."],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode in (0, 1), done.stdout + done.stderr
    return done.stdout


def failed(output: str) -> set[str]:
    return set(re.findall(r"^FAILED \S+::(\w+::\w+)\[", output, re.MULTILINE))


def test_broken_backends_fail_the_checks_they_break(tmp_path: Path) -> None:
    output = run_pytest(tmp_path, BROKEN_BACKENDS)
    broken = failed(output)
    assert "TestDropsAnEntry::test_readdir_lists_every_entry_with_its_type" in broken, output
    assert "TestIgnoresAppend::test_append_from_two_handles" in broken, output
    # Each fault breaks what it touches, not everything.
    assert "TestIgnoresAppend::test_readdir_lists_every_entry_with_its_type" not in broken
    assert "TestDropsAnEntry::test_append_from_two_handles" not in broken
    assert re.search(r"\d+ passed", output), output


def test_a_wrong_declaration_fails_and_what_does_not_apply_is_listed(tmp_path: Path) -> None:
    output = run_pytest(tmp_path, WRONG_DECLARATION)
    broken = failed(output)
    for check in (
        "test_seed_listings_are_exact",
        "test_seed_file_contents",
        "test_erofs_for_every_change",
    ):
        assert f"TestMemoryClaimsASeed::{check}" in broken, output
    assert "checks not applicable (deselected)" in output
    assert "needs writable (the backend is read-only)" in output
    assert re.search(r"\d+ deselected", output), output
