"""Read-side checks against the content a backend declares (``Capabilities.seed``)."""

from __future__ import annotations

import hashlib
import os
import random
import stat

from vfsframe.testing.conformance.check_data import run_threads
from vfsframe.testing.conformance.drivers import Driver, read_file
from vfsframe.testing.conformance.marks import requires
from vfsframe.testing.conformance.seed import Dir, File, HardLink, Seed, Symlink


class SeedChecks:
    capabilities: object

    @property
    def _seed(self) -> Seed:
        return self.capabilities.seed  # type: ignore[attr-defined,no-any-return]

    @requires("seed")
    def test_seed_listings_are_exact(self, vfs: Driver) -> None:
        for directory in ["", *sorted(self._seed.directories())]:
            names = vfs.listdir(directory)
            assert len(names) == len(set(names)), f"{directory or '/'}: a name twice"
            assert set(names) == self._seed.listing(directory), directory or "/"

    @requires("seed")
    def test_seed_types_modes_sizes_and_times(self, vfs: Driver) -> None:
        for path, entry in self._seed.entries.items():
            st = vfs.lstat(path)
            if isinstance(entry, HardLink):
                entry = self._seed.entries[entry.to]
            if isinstance(entry, File):
                assert stat.S_ISREG(st.st_mode), f"{path}: not a regular file"
                assert stat.S_IMODE(st.st_mode) == entry.mode, f"{path}: mode {st.st_mode:o}"
                assert st.st_size == len(entry.data), f"{path}: size {st.st_size}"
                assert st.st_mtime_ns // 10**9 == entry.mtime, f"{path}: mtime {st.st_mtime_ns}"
            elif isinstance(entry, Dir):
                assert stat.S_ISDIR(st.st_mode), f"{path}: not a directory"
                assert stat.S_IMODE(st.st_mode) == entry.mode, f"{path}: mode {st.st_mode:o}"
                assert st.st_mtime_ns // 10**9 == entry.mtime, f"{path}: mtime {st.st_mtime_ns}"
            elif isinstance(entry, Symlink):
                assert stat.S_ISLNK(st.st_mode), f"{path}: not a symlink"
                assert vfs.readlink(path) == entry.target
        for path in self._seed.implied_dirs():
            assert stat.S_ISDIR(vfs.lstat(path).st_mode), f"{path}: implied, not a directory"

    @requires("seed")
    def test_seed_file_contents(self, vfs: Driver) -> None:
        for path, entry in self._seed.files():
            assert read_file(vfs, path) == entry.data, path

    @requires("seed", "hard_links")
    def test_seed_hard_links_share_the_inode(self, vfs: Driver) -> None:
        links = {p: e.to for p, e in self._seed.entries.items() if isinstance(e, HardLink)}
        assert links, "the seed declares no hard link to check"
        for path, target in links.items():
            a, b = vfs.lstat(path), vfs.lstat(target)
            assert a.st_ino == b.st_ino, f"{path} and {target}: different st_ino"
            assert a.st_nlink == b.st_nlink >= 2

    @requires("seed")
    def test_seed_random_reads_of_the_largest_file(self, vfs: Driver) -> None:
        path, entry = max(self._seed.files(), key=lambda item: len(item[1].data))
        size = len(entry.data)

        def reader(index: int) -> None:
            rng = random.Random(index)
            handle = vfs.open(path, os.O_RDONLY)
            try:
                for _ in range(40):
                    offset = rng.randrange(0, size + 1)
                    length = rng.choice([1, 511, 4096, 65_537, 300_000])
                    got = vfs.pread(handle, length, offset)
                    assert got == entry.data[offset : offset + length], (offset, length)
            finally:
                vfs.close(handle)

        run_threads(4, reader)  # readers at once, each from its own handle
        digest = hashlib.sha256(read_file(vfs, path, chunk=131_071)).hexdigest()
        assert digest == hashlib.sha256(entry.data).hexdigest()
