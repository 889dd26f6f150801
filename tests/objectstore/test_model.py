"""The mount against a reference: the same random sequence of namespace and I/O operations on a
host directory and on an objectstore mount (both stores), compared call by call (result or
errno) and tree by tree. Operations are drawn mostly on names that exist in the reference, so
most succeed; the rest probe the errors. Only operations the backend supports are drawn; hard
links, special files and exchanges have their own tests."""

from __future__ import annotations

import errno
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.objectstore.test_mount import digests

pytestmark = pytest.mark.mount

NAMES = ["a", "b", "dir1", "dir2"]
Operation = Callable[[Path], Any]


def outcome(call: Callable[[], Any]) -> Any:
    try:
        return ("ok", call())
    except OSError as exc:
        return ("error", errno.errorcode.get(exc.errno or 0, exc.errno))


def write_at(path: Path, offset: int, data: bytes) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        return os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


def append(path: Path, data: bytes) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        return os.write(fd, data)
    finally:
        os.close(fd)


def read(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


class Draw:
    """Picks paths: existing ones (from the reference tree) most of the time."""

    def __init__(self, rng: random.Random, reference: Path) -> None:
        self.rng = rng
        self.reference = reference

    def _existing(self, directories: bool, root: bool = False) -> list[Path]:
        found = [Path()] if root else []
        for directory, dirs, files in os.walk(self.reference):
            base = Path(directory).relative_to(self.reference)
            found += [base / name for name in (dirs if directories else files)]
        return found

    def path(self, directories: bool = False, fresh: bool = False, root: bool = False) -> Path:
        existing = self._existing(directories, root)
        if fresh or not existing or self.rng.random() < 0.25:
            parent = self.rng.choice(self._existing(True, root=True))
            return parent / self.rng.choice(NAMES)
        return self.rng.choice(existing)


def step(draw: Draw) -> tuple[str, Operation]:
    rng = draw.rng
    data = rng.randbytes(rng.choice([0, 1, 100, 5000, 70_000]))
    choice = rng.randrange(12)
    if choice == 10:
        path, mode = draw.path(directories=rng.random() < 0.3), rng.choice([0o600, 0o755, 0o640])
        return f"chmod {path} {mode:o}", lambda r: os.chmod(r / path, mode)
    if choice == 11:
        path, target = draw.path(fresh=True), rng.choice(["a", "../dir1/b", "/elsewhere"])
        return f"symlink {path} -> {target}", lambda r: os.symlink(target, r / path)
    if choice == 0:
        path = draw.path(directories=True, fresh=True)
        return f"mkdir {path}", lambda r: os.mkdir(r / path)
    if choice == 1:
        path = draw.path(directories=True)
        return f"rmdir {path}", lambda r: os.rmdir(r / path)
    if choice in (2, 3):
        path = draw.path(fresh=rng.random() < 0.4)
        offset = rng.choice([0, 10, 4096, 100_000])
        return f"write {path}@{offset}", lambda r: write_at(r / path, offset, data)
    if choice == 4:
        path = draw.path()
        return f"append {path}", lambda r: append(r / path, data)
    if choice == 5:
        path, size = draw.path(), rng.choice([0, 5, 5000, 200_000])
        return f"truncate {path} {size}", lambda r: os.truncate(r / path, size)
    if choice == 6:
        path = draw.path()
        return f"unlink {path}", lambda r: os.unlink(r / path)
    if choice == 7:
        source = draw.path(directories=rng.random() < 0.3)
        target = draw.path(directories=rng.random() < 0.3, fresh=rng.random() < 0.6)
        return f"rename {source} {target}", lambda r: os.rename(r / source, r / target)
    if choice == 8:
        path = draw.path()
        return f"read {path}", lambda r: read(r / path)
    path = draw.path(directories=True, root=True)
    return f"list {path}", lambda r: sorted(os.listdir(r / path))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_operations_match_a_host_directory(mounted: Path, tmp_path: Path, seed: int) -> None:
    reference = tmp_path / "reference"
    reference.mkdir()
    draw = Draw(random.Random(seed), reference)
    results = {"ok": 0, "error": 0}
    for _ in range(300):
        name, call = step(draw)
        expected = outcome(lambda c=call: c(reference))
        got = outcome(lambda c=call: c(mounted))
        assert got == expected, f"{name}: mount {got}, host {expected}"
        results[expected[0]] += 1
    assert digests(mounted) == digests(reference)
    assert results["ok"] > results["error"]  # the walk did real work
