"""Content a backend serves from the start: what read-only backends declare and the kit reads.

A ``Seed`` maps paths (relative, "/"-separated) to entries. Directories above any entry are
implied. ``write_to`` lays the seed out in a host directory, from which an author builds the
backend's content (a tar or zip of it, a bucket, a passthrough root).
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

#: A fixed time for seeded entries: even seconds, because zip keeps 2-second precision.
SEED_MTIME = 1_700_000_000


@dataclass(frozen=True)
class File:
    data: bytes
    mode: int = 0o644
    mtime: int = SEED_MTIME


@dataclass(frozen=True)
class Dir:
    mode: int = 0o755
    mtime: int = SEED_MTIME


@dataclass(frozen=True)
class Symlink:
    target: str


@dataclass(frozen=True)
class HardLink:
    """Another name of the ``File`` at path ``to`` (which must come earlier in the seed)."""

    to: str


Entry = File | Dir | Symlink | HardLink


@dataclass(frozen=True)
class Seed:
    entries: Mapping[str, Entry] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for path, entry in self.entries.items():
            if path.startswith("/") or path != str(PurePosixPath(path)):
                raise ValueError(f"seed path {path!r} must be relative and normalised")
            if isinstance(entry, HardLink) and not isinstance(self.entries.get(entry.to), File):
                raise ValueError(f"seed hard link {path!r} points to {entry.to!r}, not a File")

    def implied_dirs(self) -> set[str]:
        """Directories that exist only because something lies below them."""
        implied = {str(p) for path in self.entries for p in PurePosixPath(path).parents}
        return implied - {"."} - set(self.entries)

    def directories(self) -> set[str]:
        declared = {p for p, e in self.entries.items() if isinstance(e, Dir)}
        return declared | self.implied_dirs()

    def listing(self, directory: str) -> set[str]:
        """The names directly in ``directory`` ("" is the root)."""
        parent = PurePosixPath(directory or ".")
        everything = set(self.entries) | self.implied_dirs()
        return {PurePosixPath(p).name for p in everything if PurePosixPath(p).parent == parent}

    def files(self) -> Iterator[tuple[str, File]]:
        """Every name of a regular file, hard links resolved to their File."""
        for path, entry in self.entries.items():
            if isinstance(entry, HardLink):
                entry = self.entries[entry.to]
            if isinstance(entry, File):
                yield path, entry

    def write_to(self, root: Path) -> None:
        """Create the seed under ``root`` (an existing directory) with modes and times."""
        for directory in sorted(self.directories()):
            (root / directory).mkdir(parents=True, exist_ok=True)
        for path, entry in self.entries.items():
            target = root / path
            if isinstance(entry, File):
                target.write_bytes(entry.data)
            elif isinstance(entry, Symlink):
                os.symlink(entry.target, target)
            elif isinstance(entry, HardLink):
                os.link(root / entry.to, target)
        # Modes and times last, deepest first: writing into a directory changes its mtime.
        for path, entry in sorted(self.entries.items(), key=lambda item: -item[0].count("/")):
            if isinstance(entry, File | Dir):
                os.chmod(root / path, entry.mode)
                os.utime(root / path, (entry.mtime, entry.mtime))


def pseudo_random(size: int, seed: int = 8) -> bytes:
    """Reproducible bytes that do not compress: large-I/O content that catches misplaced data."""
    return random.Random(seed).randbytes(size)


def default_seed() -> Seed:
    """A small tree with every kind of entry a read-only backend should serve."""
    return Seed(
        {
            "README": File(b"hello from the seed\n"),
            "empty": File(b""),
            "bin/tool": File(b"#!/bin/sh\necho tool\n", mode=0o755),
            "docs": Dir(mode=0o750),
            "docs/guide.txt": File(b"guide\n" * 5000, mode=0o640),
            "docs/name with spaces \u00e9": File(b"unicode name\n"),
            "deep/a/b/c/d/leaf": File(b"leaf\n"),
            "data/large.bin": File(pseudo_random(6 << 20)),
            "data/large-link": HardLink("data/large.bin"),
            "link-to-readme": Symlink("README"),
            "dangling": Symlink("does/not/exist"),
        }
    )
