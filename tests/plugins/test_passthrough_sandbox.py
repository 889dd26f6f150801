"""Escape attempts against the passthrough backend's sandbox.

Every attempt here would reach outside the share on an implementation that joins the host
root and the guest path into one string (or follows a symlink planted in the share); each
must fail here, and the "outside" directory must be left exactly as it was. The backend is
driven in-process through a ShareChain, and through a real kernel mount.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from vfsframe_plugins.passthrough import PassthroughBackend, PassthroughConfig, syscalls

from tests.conftest import require_fuse
from vfsframe import ops
from vfsframe.chain import ShareChain
from vfsframe.testing.mount import mounted_share, share_config

CTX = ops.Context(0, 0, os.getpid(), 0o022)
SECRET = b"SECRET contents outside the share\n"


class Tree:
    """share/ (the root) next to outside/ (what must stay untouched)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.share = base / "share"
        self.outside = base / "outside"
        self.share.mkdir()
        self.outside.mkdir()
        self.secret = self.outside / "secret"
        self.secret.write_bytes(SECRET)
        self.secret.chmod(0o600)
        os.utime(self.secret, ns=(1_000_000_000, 1_000_000_000))
        self.before = self.snapshot()

    def snapshot(self) -> dict[str, tuple[int, int, int, int, int, bytes]]:
        """Everything about outside/ an escape could change."""
        found = {}
        for path in [self.outside, *sorted(self.outside.rglob("*"))]:
            st = path.lstat()
            content = path.read_bytes() if stat.S_ISREG(st.st_mode) else b""
            xattrs = b",".join(n.encode() for n in os.listxattr(path, follow_symlinks=False))
            # ctime, not atime: reading for the snapshot moves atime; any change moves ctime.
            found[str(path)] = (st.st_mode, st.st_uid, st.st_size, st.st_mtime_ns,
                                st.st_ctime_ns, content + xattrs)  # fmt: skip
        return found

    def assert_untouched(self) -> None:
        assert self.snapshot() == self.before


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    return Tree(tmp_path)


@pytest.fixture
def chain(tree: Tree) -> Iterator[ShareChain]:
    chain = ShareChain(PassthroughBackend(PassthroughConfig(root=tree.share)))
    yield chain
    chain.close()


def fails(call: Callable[[], Any], *codes: int) -> int:
    """The call must raise OSError (with one of ``codes`` when given); returns the errno."""
    with pytest.raises(OSError) as info:
        result = call()
        # A handle that was opened anyway would leak the escape: show what it reached.
        pytest.fail(f"escape succeeded: {result!r}")
    if codes:
        assert info.value.errno in codes, info.value
    return info.value.errno


def plant(tree: Tree) -> None:
    """Symlinks inside the share pointing outside it, absolute and relative."""
    (tree.share / "abs").symlink_to(tree.outside)
    (tree.share / "rel").symlink_to("../outside")
    (tree.share / "abs_file").symlink_to(tree.secret)
    (tree.share / "rel_file").symlink_to("../outside/secret")
    (tree.share / "dangling").symlink_to(tree.outside / "created")
    (tree.share / "sub").mkdir()
    (tree.share / "sub" / "deep_rel").symlink_to("../../outside")


def test_c_openat2_answers_as_the_ctypes_wrapper(tree: Tree) -> None:
    """The built C openat2 (the one the sandbox uses) gives the same descriptor target or the
    same error, path included, as the ctypes wrapper it replaces."""
    assert syscalls.openat2 is not syscalls.ctypes_openat2, "the C module was not built"
    plant(tree)
    (tree.share / "sub" / "file").write_bytes(b"x")
    root = os.open(tree.share, os.O_PATH | os.O_DIRECTORY)
    beneath = (
        syscalls.RESOLVE_BENEATH | syscalls.RESOLVE_NO_SYMLINKS | syscalls.RESOLVE_NO_MAGICLINKS
    )
    cases = [
        (b"sub/file", os.O_RDONLY, beneath), (b"sub", os.O_PATH | os.O_DIRECTORY, beneath),
        (b"abs/secret", os.O_RDONLY, beneath), (b"rel_file", os.O_RDONLY, beneath),
        (b"sub/deep_rel", os.O_PATH, beneath), (b"../outside/secret", os.O_RDONLY, beneath),
        (str(tree.secret).encode(), os.O_RDONLY, beneath), (b"missing", os.O_RDONLY, beneath),
        (b"sub/file/x", os.O_RDONLY, beneath), (b"abs/secret", os.O_RDONLY, 0),
        (b"sub/file", os.O_RDONLY, 1 << 40),  # an unknown resolve flag: EINVAL
    ]  # fmt: skip

    def outcome(call: Callable[..., int], path: bytes, flags: int, resolve: int) -> object:
        try:
            fd = call(root, path, flags | os.O_CLOEXEC, 0, resolve)
        except OSError as exc:
            return (exc.errno, exc.strerror, exc.filename)
        try:
            return os.readlink(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)

    try:
        for path, flags, resolve in cases:
            ours = outcome(syscalls.openat2, path, flags, resolve)
            assert ours == outcome(syscalls.ctypes_openat2, path, flags, resolve), path
        with pytest.raises(ValueError, match="null byte"):
            syscalls.openat2(root, b"sub\0file", os.O_RDONLY, 0, beneath)
    finally:
        os.close(root)
    tree.assert_untouched()


# -- in-process: `..` and planted symlinks ---------------------------------------------------


def test_dotdot_components_are_refused(chain: ShareChain, tree: Tree) -> None:
    for path in ("/..", "/../outside/secret", "/sub/../../outside/secret", "/./x"):
        fails(lambda p=path: chain.getattr(ops.GetattrRequest(CTX, p)), errno.EINVAL)
        fails(lambda p=path: chain.open(ops.OpenRequest(CTX, p, os.O_RDONLY)), errno.EINVAL)
    fails(lambda: chain.mkdir(ops.MkdirRequest(CTX, "/../outside/made", 0o755)))
    fails(lambda: chain.create(ops.CreateRequest(CTX, "/../outside/new", os.O_WRONLY, 0o644)))
    fails(lambda: chain.unlink(ops.UnlinkRequest(CTX, "/../outside/secret")))
    tree.assert_untouched()


@pytest.mark.parametrize("link", ["abs", "rel", "sub/deep_rel"])
def test_directory_symlinks_are_not_followed(chain: ShareChain, tree: Tree, link: str) -> None:
    plant(tree)
    through = f"/{link}/secret"
    fails(lambda: chain.getattr(ops.GetattrRequest(CTX, through)), errno.ELOOP, errno.ENOTDIR)
    fails(lambda: chain.open(ops.OpenRequest(CTX, through, os.O_RDWR)))
    fails(lambda: chain.open(ops.OpenRequest(CTX, through, os.O_RDONLY | os.O_TRUNC)))
    fails(lambda: chain.create(ops.CreateRequest(CTX, f"/{link}/new", os.O_WRONLY, 0o644)))
    fails(lambda: chain.mkdir(ops.MkdirRequest(CTX, f"/{link}/newdir", 0o755)))
    fails(lambda: chain.mknod(ops.MknodRequest(CTX, f"/{link}/fifo", stat.S_IFIFO | 0o644)))
    fails(lambda: chain.symlink(ops.SymlinkRequest(CTX, f"/{link}/sl", "x")))
    fails(lambda: chain.unlink(ops.UnlinkRequest(CTX, through)))
    fails(lambda: chain.opendir(ops.OpendirRequest(CTX, f"/{link}")))
    fails(lambda: chain.readdir(ops.ReaddirRequest(CTX, f"/{link}")))
    fails(lambda: chain.setattr(ops.SetattrRequest(CTX, through, mode=0o777)))
    fails(lambda: chain.setattr(ops.SetattrRequest(CTX, through, size=0)))
    fails(lambda: chain.setxattr(ops.SetxattrRequest(CTX, through, "user.x", b"1")))
    fails(lambda: chain.getxattr(ops.GetxattrRequest(CTX, through, "user.x")))
    fails(lambda: chain.statfs(ops.StatfsRequest(CTX, through)))
    (tree.share / "mine").write_bytes(b"mine")
    fails(lambda: chain.rename(ops.RenameRequest(CTX, "/mine", f"/{link}/mine")))
    fails(lambda: chain.rename(ops.RenameRequest(CTX, through, "/stolen")))
    fails(lambda: chain.link(ops.LinkRequest(CTX, through, "/stolen")))
    fails(lambda: chain.link(ops.LinkRequest(CTX, "/mine", f"/{link}/mine")))
    assert not (tree.share / "stolen").exists()
    tree.assert_untouched()


@pytest.mark.parametrize("link", ["abs_file", "rel_file"])
def test_file_symlinks_are_not_followed(chain: ShareChain, tree: Tree, link: str) -> None:
    plant(tree)
    path = f"/{link}"
    fails(lambda: chain.open(ops.OpenRequest(CTX, path, os.O_RDONLY)), errno.ELOOP)
    fails(lambda: chain.open(ops.OpenRequest(CTX, path, os.O_WRONLY | os.O_TRUNC)), errno.ELOOP)
    # create on an existing symlink name must not create or open through it
    fails(lambda: chain.create(ops.CreateRequest(CTX, path, os.O_WRONLY, 0o644)), errno.ELOOP)
    fails(lambda: chain.create(ops.CreateRequest(CTX, "/dangling", os.O_WRONLY, 0o644)))
    # chmod of a symlink: EOPNOTSUPP, like fchmodat(AT_SYMLINK_NOFOLLOW) on Linux
    fails(lambda: chain.setattr(ops.SetattrRequest(CTX, path, mode=0o666)), errno.EOPNOTSUPP)
    fails(lambda: chain.setattr(ops.SetattrRequest(CTX, path, size=0)), errno.EINVAL)
    # chown, utimes and xattrs act on the link itself, never on its target
    attr = chain.setattr(ops.SetattrRequest(CTX, path, uid=1234, gid=1234))
    assert stat.S_ISLNK(attr.st_mode) and attr.st_uid == 1234
    attr = chain.setattr(ops.SetattrRequest(CTX, path, atime_ns=5, mtime_ns=7_000_000_123))
    assert stat.S_ISLNK(attr.st_mode) and attr.st_mtime_ns == 7_000_000_123
    fails(lambda: chain.setxattr(ops.SetxattrRequest(CTX, path, "user.x", b"1")))
    # the link itself is served: lstat, readlink, rename, hard link, unlink
    assert stat.S_ISLNK(chain.getattr(ops.GetattrRequest(CTX, path)).st_mode)
    assert chain.readlink(ops.ReadlinkRequest(CTX, path)) == os.readlink(tree.share / link)
    attr = chain.link(ops.LinkRequest(CTX, path, "/hardlink"))
    assert stat.S_ISLNK(attr.st_mode)
    chain.rename(ops.RenameRequest(CTX, path, "/renamed"))
    chain.unlink(ops.UnlinkRequest(CTX, "/renamed"))
    assert not (tree.outside / "created").exists()
    tree.assert_untouched()


def test_proc_magic_links_are_refused(chain: ShareChain, tree: Tree) -> None:
    secret_fd = os.open(tree.secret, os.O_RDWR)
    try:
        (tree.share / "proc_root").symlink_to("/proc/self/root")
        (tree.share / "proc_fd").symlink_to(f"/proc/self/fd/{secret_fd}")
        (tree.share / "proc_cwd").symlink_to("/proc/self/cwd")
        for path in (f"/proc_root{tree.secret}", "/proc_cwd/x", "/proc_root/etc/passwd"):
            fails(lambda p=path: chain.getattr(ops.GetattrRequest(CTX, p)))
            fails(lambda p=path: chain.open(ops.OpenRequest(CTX, p, os.O_RDWR)))
            fails(lambda p=path: chain.create(ops.CreateRequest(CTX, p, os.O_RDWR, 0o600)))
        fails(lambda: chain.open(ops.OpenRequest(CTX, "/proc_fd", os.O_RDWR)), errno.ELOOP)
        fails(lambda: chain.setattr(ops.SetattrRequest(CTX, "/proc_fd", size=0)))
        fails(lambda: chain.setattr(ops.SetattrRequest(CTX, "/proc_fd", mode=0o666)))
    finally:
        os.close(secret_fd)
    tree.assert_untouched()


def test_fallback_walk_without_openat2(tree: Tree) -> None:
    """The per-component O_NOFOLLOW walk (kernels without openat2) refuses the same."""
    plant(tree)
    backend = PassthroughBackend(PassthroughConfig(root=tree.share))
    backend.sandbox.has_openat2 = False
    chain = ShareChain(backend)
    try:
        for link in ("abs", "rel", "sub/deep_rel"):
            fails(lambda lk=link: chain.getattr(ops.GetattrRequest(CTX, f"/{lk}/secret")))
            fails(lambda lk=link: chain.open(ops.OpenRequest(CTX, f"/{lk}/secret", os.O_RDWR)))
            fails(lambda lk=link: chain.mkdir(ops.MkdirRequest(CTX, f"/{lk}/d", 0o755)))
        fails(lambda: chain.open(ops.OpenRequest(CTX, "/abs_file", os.O_RDWR)), errno.ELOOP)
        (tree.share / "sub" / "real").write_bytes(b"ok")
        fh = chain.open(ops.OpenRequest(CTX, "/sub/real", os.O_RDONLY))
        assert chain.read(ops.ReadRequest(CTX, "/sub/real", fh, 0, 10)) == b"ok"
        chain.release(ops.ReleaseRequest(CTX, "/sub/real", fh))
    finally:
        chain.close()
    tree.assert_untouched()


# -- a directory swapped for a symlink between calls ------------------------------------------


SWAPPER = """
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
a, b = sys.argv[1].encode(), sys.argv[2].encode()
while True:
    libc.renameat2(-100, a, -100, b, 2)
"""


@contextlib.contextmanager
def swapping(share: Path, target: str | Path) -> Iterator[None]:
    """Flip share/d between a real directory and a symlink to ``target``, atomically
    (RENAME_EXCHANGE), as fast as a separate process can, until the block ends."""
    (share / "d").mkdir()
    (share / "d" / "victim").write_bytes(b"inside\n")
    (share / "d_link").symlink_to(target)
    swapper = subprocess.Popen(
        [sys.executable, "-c", SWAPPER, str(share / "d"), str(share / "d_link")]
    )
    try:
        time.sleep(0.2)
        yield
    finally:
        swapper.kill()
        swapper.wait()


def test_directory_swapped_for_symlink_race(chain: ShareChain, tree: Tree) -> None:
    (tree.outside / "victim").write_bytes(SECRET)
    tree.before = tree.snapshot()
    opened = refused = 0
    deadline = time.monotonic() + 3
    with swapping(tree.share, tree.outside):
        index = 0
        while time.monotonic() < deadline:
            index += 1
            try:
                fh = chain.open(ops.OpenRequest(CTX, "/d/victim", os.O_RDWR))
            except OSError:
                refused += 1
            else:
                opened += 1
                data = chain.read(ops.ReadRequest(CTX, "/d/victim", fh, 0, 100))
                assert not data.startswith(SECRET[:3])  # never the outside file
                chain.release(ops.ReleaseRequest(CTX, "/d/victim", fh))
            with contextlib.suppress(OSError):
                fh, _ = chain.create(ops.CreateRequest(CTX, f"/d/n{index}", os.O_WRONLY, 0o644))
                chain.release(ops.ReleaseRequest(CTX, "", fh))
            for call in (
                lambda i=index: chain.mkdir(ops.MkdirRequest(CTX, f"/d/m{i}", 0o755)),
                lambda: chain.setattr(ops.SetattrRequest(CTX, "/d/victim", mode=0o604)),
                lambda: chain.setattr(ops.SetattrRequest(CTX, "/d/victim", size=3)),
                lambda: chain.unlink(ops.UnlinkRequest(CTX, "/d/victim_gone")),
            ):
                with contextlib.suppress(OSError):
                    call()
            with contextlib.suppress(OSError):
                chain.setattr(ops.SetattrRequest(CTX, "/d/victim", size=7))
    assert opened and refused, (opened, refused)
    tree.assert_untouched()


# -- long paths -------------------------------------------------------------------------------


def deep_path(levels: int, name_length: int = 200) -> list[str]:
    return [f"{index:03d}".ljust(name_length, "x") for index in range(levels)]


def test_paths_up_to_path_max_stay_legal(tmp_path: Path) -> None:
    """A share path of ~4000 bytes is legal under a mountpoint; joined to a long host root it
    would not be (ENAMETOOLONG). Paths longer than PATH_MAX (reachable with relative paths)
    are resolved in chunks."""
    root = tmp_path / ("r" * 250) / ("s" * 250)
    root.mkdir(parents=True)
    chain = ShareChain(PassthroughBackend(PassthroughConfig(root=root)))
    try:
        path = ""
        for name in deep_path(24):  # 24 * 201 = 4824 bytes: beyond PATH_MAX
            path += "/" + name
            chain.mkdir(ops.MkdirRequest(CTX, path, 0o755))
        assert len(path) > 4096
        fh, _ = chain.create(ops.CreateRequest(CTX, path + "/file", os.O_RDWR, 0o644))
        chain.write(ops.WriteRequest(CTX, path, fh, 0, [memoryview(b"deep")], 4))
        chain.release(ops.ReleaseRequest(CTX, path, fh))
        assert chain.getattr(ops.GetattrRequest(CTX, path + "/file")).st_size == 4
        names = [e.name for e in chain.readdir(ops.ReaddirRequest(CTX, path))]
        assert names == ["file"]
    finally:
        chain.close()


# -- through a kernel mount -------------------------------------------------------------------


@pytest.fixture
def mounted_tree(tree: Tree, mountpoint: Path) -> Iterator[tuple[Tree, Path]]:
    require_fuse()
    share = share_config({"type": "passthrough", "root": str(tree.share)}, cache="none")
    with mounted_share(mountpoint, share):
        yield tree, mountpoint


def test_mount_symlink_metadata_ops_act_on_the_link(mounted_tree: tuple[Tree, Path]) -> None:
    tree, mp = mounted_tree
    plant(tree)
    link = mp / "abs_file"
    os.chown(link, 4321, 4321, follow_symlinks=False)
    os.utime(link, ns=(3_000_000_000, 4_000_000_000), follow_symlinks=False)
    assert (tree.share / "abs_file").lstat().st_uid == 4321
    assert (tree.share / "abs_file").lstat().st_mtime_ns == 4_000_000_000
    with pytest.raises(OSError) as info:
        syscalls.fchmodat2(-100, os.fsencode(link), 0o777, syscalls.AT_SYMLINK_NOFOLLOW)
    assert info.value.errno == errno.EOPNOTSUPP
    with pytest.raises(OSError) as info:
        os.open(link, os.O_RDONLY | os.O_NOFOLLOW)
    assert info.value.errno == errno.ELOOP
    tree.assert_untouched()


def test_mount_directory_swap_race(mounted_tree: tuple[Tree, Path]) -> None:
    tree, mp = mounted_tree
    (tree.outside / "victim").write_bytes(SECRET)
    tree.before = tree.snapshot()
    deadline = time.monotonic() + 3
    seen_inside = 0
    # Relative: the client kernel, which follows symlinks itself, sees mp/../outside, which
    # does not exist; only a server that follows the link would reach tree.outside.
    with swapping(tree.share, "../outside"):
        index = 0
        while time.monotonic() < deadline:
            index += 1
            with contextlib.suppress(OSError):
                with open(mp / "d" / "victim", "rb") as file:
                    data = file.read()
                assert data != SECRET  # the client never reads the outside file
                seen_inside += 1
            with contextlib.suppress(OSError):
                os.close(os.open(mp / "d" / f"n{index}", os.O_CREAT | os.O_WRONLY, 0o644))
            with contextlib.suppress(OSError):
                os.mkdir(mp / "d" / f"m{index}")
            with contextlib.suppress(OSError):
                os.chmod(mp / "d" / "victim", 0o606)
            with contextlib.suppress(OSError):
                os.truncate(mp / "d" / "victim", 2)
    assert seen_inside
    tree.assert_untouched()


def test_mount_long_paths(mounted_tree: tuple[Tree, Path]) -> None:
    tree, mp = mounted_tree
    fd = os.open(mp, os.O_PATH)
    host_fd = os.open(tree.share, os.O_PATH)
    try:
        for name in deep_path(24):
            os.mkdir(name, dir_fd=fd)
            next_fd = os.open(name, os.O_PATH, dir_fd=fd)
            os.close(fd)
            fd = next_fd
            next_host = os.open(name, os.O_PATH, dir_fd=host_fd)
            os.close(host_fd)
            host_fd = next_host
        file_fd = os.open("file", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd)
        os.write(file_fd, b"deep")
        os.close(file_fd)
        assert os.stat("file", dir_fd=host_fd).st_size == 4
    finally:
        os.close(fd)
        os.close(host_fd)
