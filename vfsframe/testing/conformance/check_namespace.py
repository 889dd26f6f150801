"""Names: lookup and getattr, directory listings, mkdir/rmdir, rename, links."""

from __future__ import annotations

import ctypes
import errno
import os
import stat

from vfsframe.testing.conformance.drivers import (
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    Driver,
    read_file,
    write_file,
)
from vfsframe.testing.conformance.errors import expect_errno
from vfsframe.testing.conformance.marks import only_mounted, requires


class NamespaceChecks:
    def test_root_is_a_directory(self, vfs: Driver) -> None:
        st = vfs.lstat("")
        assert stat.S_ISDIR(st.st_mode)
        assert st.st_nlink >= 1
        names = vfs.listdir("")
        assert "." not in names and ".." not in names
        expect_errno(errno.ENOENT, vfs.lstat, "no-such-name")

    @requires("writable")
    def test_create_lookup_getattr(self, vfs: Driver) -> None:
        handle = vfs.open("new", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        vfs.close(handle)
        st = vfs.lstat("new")
        assert stat.S_ISREG(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o644
        assert st.st_size == 0
        assert vfs.lstat("new").st_ino == st.st_ino, "st_ino must be stable"
        assert "new" in vfs.listdir("")

    @requires("writable")
    def test_readdir_lists_every_entry_with_its_type(self, vfs: Driver) -> None:
        vfs.mkdir("big")
        files = {f"file-{i:04d}" for i in range(300)}
        for name in files:
            vfs.close(vfs.open(f"big/{name}", os.O_WRONLY | os.O_CREAT))
        for i in range(5):
            vfs.mkdir(f"big/dir-{i}")
        listing = vfs.entries("big")
        names = [name for name, _ino, _type in listing]
        assert len(names) == len(set(names)), "a name is listed twice"
        assert set(names) == files | {f"dir-{i}" for i in range(5)}
        for name, ino, kind in listing:
            st = vfs.lstat(f"big/{name}")
            assert kind in (0, stat.S_IFMT(st.st_mode)), f"{name}: listed type {kind:o}"
            assert ino == st.st_ino, f"{name}: listed ino {ino}, getattr says {st.st_ino}"

    @requires("writable")
    def test_mkdir_rmdir(self, vfs: Driver) -> None:
        vfs.mkdir("d", 0o750)
        st = vfs.lstat("d")
        assert stat.S_ISDIR(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o750
        assert vfs.listdir("d") == []
        vfs.mkdir("d/e")
        assert vfs.listdir("d") == ["e"]
        vfs.rmdir("d/e")
        vfs.rmdir("d")
        expect_errno(errno.ENOENT, vfs.lstat, "d")
        assert "d" not in vfs.listdir("")

    @requires("writable")
    def test_rename_file_and_directory(self, vfs: Driver) -> None:
        vfs.mkdir("src")
        vfs.mkdir("src/sub")
        write_file(vfs, "src/sub/f", b"moved with its directory")
        write_file(vfs, "a", b"A")
        vfs.rename("a", "src/b")
        expect_errno(errno.ENOENT, vfs.lstat, "a")
        assert read_file(vfs, "src/b") == b"A"
        vfs.rename("src", "dst")
        expect_errno(errno.ENOENT, vfs.lstat, "src")
        assert read_file(vfs, "dst/sub/f") == b"moved with its directory"
        assert sorted(vfs.listdir("dst")) == ["b", "sub"]

    @requires("writable")
    def test_rename_over_existing(self, vfs: Driver) -> None:
        write_file(vfs, "a", b"new")
        write_file(vfs, "b", b"old")
        vfs.rename("a", "b")
        assert read_file(vfs, "b") == b"new"
        assert "a" not in vfs.listdir("")
        vfs.mkdir("d1")
        vfs.mkdir("d2")
        vfs.rename("d1", "d2")  # over an empty directory
        assert "d1" not in vfs.listdir("")
        vfs.mkdir("d3")
        write_file(vfs, "d2/x", b"")
        expect_errno({errno.ENOTEMPTY, errno.EEXIST}, vfs.rename, "d3", "d2")

    @requires("writable", "rename_noreplace")
    def test_rename_noreplace(self, vfs: Driver) -> None:
        write_file(vfs, "a", b"A")
        write_file(vfs, "b", b"B")
        expect_errno(errno.EEXIST, vfs.rename, "a", "b", RENAME_NOREPLACE)
        assert (read_file(vfs, "a"), read_file(vfs, "b")) == (b"A", b"B")
        vfs.rename("a", "c", RENAME_NOREPLACE)
        assert read_file(vfs, "c") == b"A"

    @requires("writable", "rename_exchange")
    def test_rename_exchange(self, vfs: Driver) -> None:
        write_file(vfs, "a", b"A")
        vfs.mkdir("d")
        write_file(vfs, "d/inside", b"I")
        vfs.rename("a", "d", RENAME_EXCHANGE)  # a file and a directory swap
        assert read_file(vfs, "d") == b"A"
        assert read_file(vfs, "a/inside") == b"I"
        expect_errno(errno.ENOENT, vfs.rename, "a", "missing", RENAME_EXCHANGE)

    @requires("writable", "hard_links")
    def test_hard_links(self, vfs: Driver) -> None:
        write_file(vfs, "one", b"shared")
        vfs.mkdir("d")
        vfs.link("one", "d/two")
        one, two = vfs.lstat("one"), vfs.lstat("d/two")
        assert one.st_ino == two.st_ino
        assert one.st_nlink == two.st_nlink == 2
        handle = vfs.open("d/two", os.O_WRONLY)
        vfs.pwrite(handle, b"SH", 0)
        vfs.close(handle)
        assert read_file(vfs, "one") == b"SHared"
        vfs.unlink("one")
        assert vfs.lstat("d/two").st_nlink == 1
        assert read_file(vfs, "d/two") == b"SHared"

    @requires("writable", "symlinks")
    def test_symlinks(self, vfs: Driver) -> None:
        write_file(vfs, "target", b"t")
        vfs.symlink("target", "link")
        vfs.symlink("/no/such/place", "dangling-link")
        st = vfs.lstat("link")
        assert stat.S_ISLNK(st.st_mode)
        assert st.st_size == len("target")
        assert vfs.readlink("link") == "target"
        assert vfs.readlink("dangling-link") == "/no/such/place"
        expect_errno(errno.EINVAL, vfs.readlink, "target")
        vfs.unlink("link")
        assert vfs.lstat("target").st_size == 1


class _Dirent(ctypes.Structure):
    _fields_ = [
        ("d_ino", ctypes.c_uint64),
        ("d_off", ctypes.c_int64),
        ("d_reclen", ctypes.c_uint16),
        ("d_type", ctypes.c_uint8),
        ("d_name", ctypes.c_char * 256),
    ]


class _DirStream:
    """opendir/readdir/telldir/seekdir from libc: Python has no telldir."""

    libc = ctypes.CDLL(None, use_errno=True)
    libc.opendir.restype = ctypes.c_void_p
    libc.readdir.restype = ctypes.POINTER(_Dirent)
    libc.readdir.argtypes = [ctypes.c_void_p]
    libc.telldir.restype = ctypes.c_long
    libc.telldir.argtypes = [ctypes.c_void_p]
    libc.seekdir.argtypes = [ctypes.c_void_p, ctypes.c_long]
    libc.closedir.argtypes = [ctypes.c_void_p]

    def __init__(self, path: str) -> None:
        self.dir = self.libc.opendir(os.fsencode(path))
        if not self.dir:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), path)

    def next(self) -> str | None:
        while True:
            entry = self.libc.readdir(self.dir)
            if not entry:
                return None
            name = os.fsdecode(entry.contents.d_name)
            if name not in (".", ".."):
                return name

    def tell(self) -> int:
        return self.libc.telldir(self.dir)

    def seek(self, position: int) -> None:
        self.libc.seekdir(self.dir, position)

    def close(self) -> None:
        self.libc.closedir(self.dir)


class ListingOffsetChecks:
    """Directory offsets: what ``telldir`` says is where ``seekdir`` goes back to."""

    def _listed_dir(self, vfs: Driver, count: int) -> str:
        if self.capabilities.writable:  # type: ignore[attr-defined]
            vfs.mkdir("offsets")
            for i in range(count):
                vfs.close(vfs.open(f"offsets/f{i:04d}", os.O_WRONLY | os.O_CREAT))
            return "offsets"
        return max(self.capabilities.seed.directories() | {""}, key=lambda d: len(vfs.listdir(d)))  # type: ignore[attr-defined]

    @only_mounted("telldir/seekdir go through the kernel's directory offsets")
    def test_readdir_offsets_are_stable(self, vfs: Driver) -> None:
        path = os.path.join(vfs.root, self._listed_dir(vfs, 400))  # type: ignore[attr-defined]
        stream = _DirStream(path)
        try:
            positions: list[tuple[int, str]] = []
            while True:
                position = stream.tell()
                name = stream.next()
                if name is None:
                    break
                positions.append((position, name))
            assert sorted(n for _p, n in positions) == sorted(os.listdir(path))
            for position, name in positions[::-1][::7]:
                stream.seek(position)
                assert stream.next() == name, f"seekdir({position}) did not return to {name!r}"
        finally:
            stream.close()

    @requires("writable")
    @only_mounted("a listing that changes while it is read is the session's offsets at work")
    def test_readdir_while_the_directory_changes(self, vfs: Driver) -> None:
        vfs.mkdir("changing")
        originals = {f"f{i:04d}" for i in range(200)}
        for name in originals:
            vfs.close(vfs.open(f"changing/{name}", os.O_WRONLY | os.O_CREAT))
        stream = _DirStream(os.path.join(vfs.root, "changing"))  # type: ignore[attr-defined]
        seen: list[str] = []
        try:
            for _ in range(50):
                seen.append(stream.next() or "")
            for name in seen[:20]:  # remove names already read, add new ones
                vfs.unlink(f"changing/{name}")
            for i in range(20):
                vfs.close(vfs.open(f"changing/new{i}", os.O_WRONLY | os.O_CREAT))
            while (name := stream.next()) is not None:
                seen.append(name)
        finally:
            stream.close()
        assert len(seen) == len(set(seen)), "a name came twice in one pass"
        assert originals <= set(seen), f"missing: {sorted(originals - set(seen))[:5]}"
