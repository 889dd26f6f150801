"""The errno a backend (or the kernel in front of it) gives for the common mistakes."""

from __future__ import annotations

import errno
import os

from vfsframe.testing.conformance.drivers import Driver, write_file
from vfsframe.testing.conformance.errors import expect_errno
from vfsframe.testing.conformance.marks import only_mounted, requires


class ErrnoChecks:
    def test_enoent(self, vfs: Driver) -> None:
        expect_errno(errno.ENOENT, vfs.lstat, "missing")
        expect_errno(errno.ENOENT, vfs.open, "missing", os.O_RDONLY)
        expect_errno(errno.ENOENT, vfs.listdir, "missing")
        expect_errno(errno.ENOENT, vfs.readlink, "missing")

    @requires("writable")
    def test_enoent_on_changes(self, vfs: Driver) -> None:
        expect_errno(errno.ENOENT, vfs.unlink, "missing")
        expect_errno(errno.ENOENT, vfs.rmdir, "missing")
        expect_errno(errno.ENOENT, vfs.rename, "missing", "other")
        expect_errno(errno.ENOENT, vfs.truncate, "missing", 0)
        expect_errno(errno.ENOENT, vfs.mkdir, "missing/child")

    @requires("writable")
    def test_eexist(self, vfs: Driver) -> None:
        write_file(vfs, "f", b"")
        vfs.mkdir("d")
        expect_errno(errno.EEXIST, vfs.mkdir, "d")
        expect_errno(errno.EEXIST, vfs.mkdir, "f")
        expect_errno(errno.EEXIST, vfs.open, "f", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        if self.capabilities.symlinks:  # type: ignore[attr-defined]
            expect_errno(errno.EEXIST, vfs.symlink, "x", "f")
        if self.capabilities.hard_links:  # type: ignore[attr-defined]
            expect_errno(errno.EEXIST, vfs.link, "f", "d")

    @requires("writable")
    def test_enotempty(self, vfs: Driver) -> None:
        vfs.mkdir("d")
        write_file(vfs, "d/f", b"")
        expect_errno(errno.ENOTEMPTY, vfs.rmdir, "d")
        assert vfs.listdir("d") == ["f"]

    @requires("writable")
    @only_mounted("the kernel's VFS checks the file type before asking the backend")
    def test_enotdir(self, vfs: Driver) -> None:
        write_file(vfs, "f", b"")
        vfs.mkdir("d")
        expect_errno(errno.ENOTDIR, vfs.lstat, "f/below")
        expect_errno(errno.ENOTDIR, vfs.listdir, "f")
        expect_errno(errno.ENOTDIR, vfs.rmdir, "f")
        expect_errno(errno.ENOTDIR, vfs.rename, "d", "f")

    @requires("writable")
    @only_mounted("the kernel's VFS checks the file type before asking the backend")
    def test_eisdir(self, vfs: Driver) -> None:
        write_file(vfs, "f", b"")
        vfs.mkdir("d")
        expect_errno(errno.EISDIR, vfs.open, "d", os.O_WRONLY)
        expect_errno(errno.EISDIR, vfs.unlink, "d")
        expect_errno(errno.EISDIR, vfs.rename, "f", "d")

    @requires("read_only")
    def test_erofs_for_every_change(self, vfs: Driver) -> None:
        seed = self.capabilities.seed  # type: ignore[attr-defined]
        file = next(path for path, _entry in seed.files())
        directory = sorted(seed.directories())[0]
        refused = [
            (vfs.open, "new-file", os.O_WRONLY | os.O_CREAT),
            (vfs.open, file, os.O_WRONLY),
            (vfs.open, file, os.O_RDWR),
            (vfs.mkdir, "new-dir"),
            (vfs.unlink, file),
            (vfs.rename, file, "renamed"),
            (vfs.symlink, "target", "new-link"),
            (vfs.link, file, "new-hard-link"),
            (vfs.chmod, file, 0o600),
            (vfs.utime, file, 0, 0),
            (vfs.truncate, file, 0),
            (vfs.setxattr, file, "user.x", b"1"),
        ]
        for call, *args in refused:
            expect_errno(errno.EROFS, call, *args)
        expect_errno({errno.EROFS, errno.ENOTEMPTY}, vfs.rmdir, directory)
        assert vfs.lstat(file)  # still there
