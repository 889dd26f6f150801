"""The memory backend's namespace and metadata: names, links, modes, owners, times, xattrs."""

from __future__ import annotations

import errno
import os
import stat

import pydantic
import pytest
from vfsframe_plugins.memory import PLUGIN, MemoryBackend, MemoryConfig

from tests.plugins.memfs_helpers import OTHER, ROOT, USER, MemFs, make_fs, raises_errno
from vfsframe import ops
from vfsframe.hookspecs import OPERATIONS
from vfsframe.plugin import Backend, BuildContext, PluginRegistry

# -- plugin and config -----------------------------------------------------------------


def test_entry_point_finds_the_memory_backend() -> None:
    registry = PluginRegistry.discover()
    plugin = registry.backends["memory"]
    assert plugin.kind == "backend"
    assert plugin.config is MemoryConfig
    backend = plugin.build(MemoryConfig(), BuildContext(lambda b, m: None))  # type: ignore[arg-type]
    assert isinstance(backend, MemoryBackend)
    assert PLUGIN.name == "memory" and PLUGIN.summary


def test_config_parses_sizes_and_refuses_unknown_fields() -> None:
    assert MemoryConfig().capacity == 1 << 30
    config = MemoryConfig.model_validate({"type": "memory", "capacity": "2MiB", "max_inodes": 5})
    assert config.capacity == 2 << 20 and config.max_inodes == 5
    with pytest.raises(pydantic.ValidationError):
        MemoryConfig.model_validate({"capacity": "lots"})
    with pytest.raises(pydantic.ValidationError):
        MemoryConfig.model_validate({"capacity": "1MiB", "colour": "red"})
    with pytest.raises(pydantic.ValidationError):
        MemoryConfig.model_validate({"max_inodes": 0})
    schema = MemoryConfig.model_json_schema()
    assert all(schema["properties"][f].get("description") for f in ("capacity", "max_inodes"))


def test_backend_declares_lock_capabilities() -> None:
    assert MemoryBackend.posix_locks and MemoryBackend.flock_locks


def test_every_operation_is_implemented() -> None:
    missing = [
        op
        for op in OPERATIONS
        if getattr(MemoryBackend, f"vfs_{op}") is getattr(Backend, f"vfs_{op}")
    ]
    assert missing == []


# -- root, lookup, names ---------------------------------------------------------------


def test_root_is_inode_one_and_a_directory(fs: MemFs) -> None:
    root = fs.stat("/")
    assert root.st_ino == 1
    assert stat.S_ISDIR(root.st_mode)
    assert root.st_nlink == 2


def test_lookup_errors(fs: MemFs) -> None:
    fs.make_file("/f")
    with raises_errno(errno.ENOENT):
        fs.stat("/missing")
    with raises_errno(errno.ENOENT):
        fs.stat("/nodir/x")
    with raises_errno(errno.ENOTDIR):
        fs.stat("/f/x")
    with raises_errno(errno.ENAMETOOLONG):
        fs.stat("/" + "a" * 256)
    with raises_errno(errno.ENAMETOOLONG):
        fs.make_file("/" + "é" * 128)  # 256 bytes encoded
    fs.make_file("/" + "b" * 255)


def test_dot_names_are_refused(fs: MemFs) -> None:
    fs.mkdir("/d")
    for path in ("/d/.", "/d/..", "/d/a\0b"):
        with raises_errno(errno.EINVAL):
            fs.mkdir(path)
    with raises_errno(errno.EINVAL):
        fs.rmdir("/d/.")
    assert fs.names("/d") == []


def test_inode_numbers_are_unique_and_stable(fs: MemFs) -> None:
    inos = {fs.make_file(f"/f{i}").st_ino for i in range(5)}
    inos.add(fs.mkdir("/d").st_ino)
    assert len(inos) == 6 and 1 not in inos
    first = fs.stat("/f0").st_ino
    fs.rename("/f0", "/d/g")
    assert fs.stat("/d/g").st_ino == first
    fs.unlink("/f1")
    assert fs.make_file("/f1").st_ino not in inos  # numbers are never reused


def test_new_nodes_belong_to_the_caller_and_respect_umask(fs: MemFs) -> None:
    attr = fs.make_file("/f", mode=0o666)
    assert (attr.st_uid, attr.st_gid) == (1000, 1000)
    assert stat.S_IMODE(attr.st_mode) == 0o644
    assert stat.S_IMODE(fs.mkdir("/d", 0o777).st_mode) == 0o755
    strict = fs.as_user(ops.Context(uid=7, gid=8, pid=1, umask=0o077))
    attr = strict.mkdir("/s", 0o777)
    assert (attr.st_uid, attr.st_gid, stat.S_IMODE(attr.st_mode)) == (7, 8, 0o700)


def test_setgid_directory_passes_on_its_group(fs: MemFs) -> None:
    root = fs.as_user(ROOT)
    root.mkdir("/shared", 0o2775)
    root.setattr("/shared", gid=500)
    assert fs.stat("/shared").st_mode & stat.S_ISGID
    f = fs.make_file("/shared/f")
    assert f.st_gid == 500 and not f.st_mode & stat.S_ISGID
    d = fs.mkdir("/shared/d")
    assert d.st_gid == 500 and d.st_mode & stat.S_ISGID
    deeper = fs.make_file("/shared/d/f")
    assert deeper.st_gid == 500
    # Outside it the caller's group applies.
    assert fs.make_file("/plain").st_gid == 1000
    assert not fs.mkdir("/plaind").st_mode & stat.S_ISGID


def test_setgid_bit_of_new_file_dropped_outside_its_group(fs: MemFs) -> None:
    root = fs.as_user(ROOT)
    root.mkdir("/shared", 0o2777)
    root.setattr("/shared", gid=500)
    attr = fs.make_file("/shared/f", mode=0o2755)
    assert not attr.st_mode & stat.S_ISGID
    assert fs.make_file("/own", mode=0o2755).st_mode & stat.S_ISGID


# -- directories -----------------------------------------------------------------------


def test_directory_nlink_counts_subdirectories(fs: MemFs) -> None:
    fs.mkdir("/a")
    fs.mkdir("/a/b")
    fs.mkdir("/a/c")
    fs.make_file("/a/f")
    assert fs.stat("/a").st_nlink == 4
    assert fs.stat("/").st_nlink == 3
    fs.rmdir("/a/b")
    assert fs.stat("/a").st_nlink == 3
    fs.mkdir("/z")
    fs.rename("/a/c", "/z/c")
    assert fs.stat("/a").st_nlink == 2
    assert fs.stat("/z").st_nlink == 3
    assert fs.stat("/z/c").st_nlink == 2


def test_mkdir_rmdir_errors(fs: MemFs) -> None:
    fs.mkdir("/d")
    fs.make_file("/d/f")
    fs.make_file("/f")
    with raises_errno(errno.EEXIST):
        fs.mkdir("/d")
    with raises_errno(errno.EEXIST):
        fs.mkdir("/f")
    with raises_errno(errno.EEXIST):
        fs.mkdir("/")
    with raises_errno(errno.ENOENT):
        fs.mkdir("/no/d")
    with raises_errno(errno.ENOTDIR):
        fs.mkdir("/f/d")
    with raises_errno(errno.ENOTEMPTY):
        fs.rmdir("/d")
    with raises_errno(errno.ENOTDIR):
        fs.rmdir("/f")
    with raises_errno(errno.ENOENT):
        fs.rmdir("/nothing")
    with raises_errno(errno.EBUSY):
        fs.rmdir("/")
    with raises_errno(errno.EISDIR):
        fs.unlink("/d")
    fs.unlink("/d/f")
    fs.rmdir("/d")
    with raises_errno(errno.ENOENT):
        fs.stat("/d")


def test_readdir_lists_in_creation_order_with_attributes(fs: MemFs) -> None:
    fs.mkdir("/d")
    names = ["zeta", "alpha", "mid"]
    for name in names:
        fs.make_file(f"/d/{name}", b"x" * len(name))
    fs.mkdir("/d/sub")
    entries = list(fs.chain.readdir(ops.ReaddirRequest(USER, "/d")))
    assert [e.name for e in entries] == [*names, "sub"]
    for entry in entries:
        attr = fs.stat(f"/d/{entry.name}")
        assert entry.ino == attr.st_ino
        assert stat.S_IFMT(entry.mode) == stat.S_IFMT(attr.st_mode)
        assert entry.attr == attr
    assert fs.names("/") == ["d"]
    fs.make_file("/f")
    with raises_errno(errno.ENOTDIR):
        fs.chain.readdir(ops.ReaddirRequest(USER, "/f"))
    with raises_errno(errno.ENOTDIR):
        fs.chain.opendir(ops.OpendirRequest(USER, "/f"))


def test_opendir_handle_survives_rmdir(fs: MemFs) -> None:
    fs.mkdir("/d")
    dh = fs.chain.opendir(ops.OpendirRequest(USER, "/d"))
    fs.rmdir("/d")
    assert list(fs.chain.readdir(ops.ReaddirRequest(USER, "/d", dh))) == []
    assert fs.stat("/d", dh).st_nlink == 0
    fs.chain.releasedir(ops.ReleasedirRequest(USER, "/d", dh))
    with raises_errno(errno.ENOENT):
        fs.make_file("/d/x")


# -- symlinks, special nodes -------------------------------------------------------------


def test_symlink_and_readlink(fs: MemFs) -> None:
    attr = fs.chain.symlink(ops.SymlinkRequest(USER, "/l", "../some/where"))
    assert stat.S_ISLNK(attr.st_mode) and stat.S_IMODE(attr.st_mode) == 0o777
    assert attr.st_size == len("../some/where")
    assert fs.chain.readlink(ops.ReadlinkRequest(USER, "/l")) == "../some/where"
    fs.make_file("/f")
    with raises_errno(errno.EINVAL):
        fs.chain.readlink(ops.ReadlinkRequest(USER, "/f"))
    with raises_errno(errno.EEXIST):
        fs.chain.symlink(ops.SymlinkRequest(USER, "/f", "x"))
    with raises_errno(errno.ENOENT):
        fs.chain.symlink(ops.SymlinkRequest(USER, "/e", ""))
    with raises_errno(errno.ENAMETOOLONG):
        fs.chain.symlink(ops.SymlinkRequest(USER, "/long", "x" * 4096))
    with raises_errno(errno.ELOOP):
        fs.open("/l")


@pytest.mark.parametrize(
    ("kind", "rdev", "kept"),
    [
        (stat.S_IFIFO, 0, 0),
        (stat.S_IFSOCK, 0, 0),
        (stat.S_IFCHR, os.makedev(1, 3), os.makedev(1, 3)),
        (stat.S_IFBLK, os.makedev(8, 1), os.makedev(8, 1)),
        (stat.S_IFREG, 0, 0),
    ],
)
def test_mknod_types(fs: MemFs, kind: int, rdev: int, kept: int) -> None:
    attr = fs.chain.mknod(ops.MknodRequest(USER, "/n", kind | 0o666, rdev))
    assert stat.S_IFMT(attr.st_mode) == kind
    assert stat.S_IMODE(attr.st_mode) == 0o644
    assert attr.st_rdev == kept
    assert fs.stat("/n") == attr


def test_mknod_errors(fs: MemFs) -> None:
    with raises_errno(errno.EPERM):
        fs.chain.mknod(ops.MknodRequest(USER, "/d", stat.S_IFDIR | 0o755))
    with raises_errno(errno.EINVAL):
        fs.chain.mknod(ops.MknodRequest(USER, "/x", 0o170000 & 0o150000 | 0o644))
    fs.chain.mknod(ops.MknodRequest(USER, "/p", stat.S_IFIFO | 0o644))
    with raises_errno(errno.EEXIST):
        fs.chain.mknod(ops.MknodRequest(USER, "/p", stat.S_IFIFO | 0o644))


# -- hard links --------------------------------------------------------------------------


def test_hard_links_share_the_inode_and_count_names(fs: MemFs) -> None:
    fs.mkdir("/d")
    first = fs.make_file("/f", b"data")
    fs.age("/f")
    attr = fs.link("/f", "/d/g")
    assert attr.st_ino == first.st_ino and attr.st_nlink == 2
    assert attr.st_ctime_ns > 10**12  # link changes the inode's ctime
    fs.link("/f", "/h")
    assert fs.stat("/f").st_nlink == 3
    assert fs.read_file("/d/g") == b"data"
    fs.unlink("/f")
    assert fs.stat("/h").st_nlink == 2
    fs.unlink("/h")
    assert fs.stat("/d/g").st_nlink == 1
    assert fs.read_file("/d/g") == b"data"


def test_link_errors(fs: MemFs) -> None:
    fs.mkdir("/d")
    fs.make_file("/f")
    with raises_errno(errno.EPERM):
        fs.link("/d", "/d2")
    with raises_errno(errno.EEXIST):
        fs.link("/f", "/d")
    with raises_errno(errno.ENOENT):
        fs.link("/missing", "/x")
    with raises_errno(errno.ENOENT):
        fs.link("/f", "/missing/x")


# -- rename ------------------------------------------------------------------------------


def test_rename_moves_and_replaces(fs: MemFs) -> None:
    fs.make_file("/a", b"A")
    victim = fs.make_file("/b", b"B")
    fs.link("/b", "/b2")
    fs.rename("/a", "/b")
    assert fs.read_file("/b") == b"A"
    with raises_errno(errno.ENOENT):
        fs.stat("/a")
    replaced = fs.stat("/b2")
    assert replaced.st_ino == victim.st_ino and replaced.st_nlink == 1


def test_rename_noreplace_and_exchange(fs: MemFs) -> None:
    fs.make_file("/a", b"A")
    fs.make_file("/b", b"B")
    with raises_errno(errno.EEXIST):
        fs.rename("/a", "/b", ops.RENAME_NOREPLACE)
    fs.rename("/a", "/c", ops.RENAME_NOREPLACE)
    fs.rename("/c", "/b", ops.RENAME_EXCHANGE)
    assert fs.read_file("/b") == b"A" and fs.read_file("/c") == b"B"
    with raises_errno(errno.ENOENT):
        fs.rename("/c", "/nothing", ops.RENAME_EXCHANGE)
    with raises_errno(errno.EINVAL):
        fs.rename("/c", "/b", ops.RENAME_EXCHANGE | ops.RENAME_NOREPLACE)
    with raises_errno(errno.EINVAL):
        fs.rename("/c", "/w", ops.RENAME_WHITEOUT)


def test_rename_exchange_directory_with_file_across_parents(fs: MemFs) -> None:
    fs.mkdir("/p")
    fs.mkdir("/q")
    fs.mkdir("/p/dir")
    fs.make_file("/q/file", b"F")
    fs.rename("/p/dir", "/q/file", ops.RENAME_EXCHANGE)
    assert stat.S_ISDIR(fs.stat("/q/file").st_mode)
    assert fs.read_file("/p/dir") == b"F"
    assert fs.stat("/p").st_nlink == 2
    assert fs.stat("/q").st_nlink == 3


def test_rename_posix_rules(fs: MemFs) -> None:
    fs.mkdir("/d")
    fs.mkdir("/d/sub")
    fs.mkdir("/full")
    fs.make_file("/full/x")
    fs.mkdir("/empty")
    fs.make_file("/f")
    with raises_errno(errno.ENOTEMPTY):
        fs.rename("/d", "/full")
    with raises_errno(errno.ENOTDIR):
        fs.rename("/d", "/f")
    with raises_errno(errno.EISDIR):
        fs.rename("/f", "/empty")
    with raises_errno(errno.EINVAL):
        fs.rename("/d", "/d/sub/inside")
    with raises_errno(errno.EINVAL):
        fs.rename("/d", "/d/sub")
    with raises_errno(errno.ENOTEMPTY):
        fs.rename("/d/sub", "/d")  # the target is the source's ancestor
    with raises_errno(errno.ENOENT):
        fs.rename("/missing", "/x")
    with raises_errno(errno.ENOENT):
        fs.rename("/f", "/missing/x")
    with raises_errno(errno.ENOTDIR):
        fs.rename("/f", "/f/x")
    # A directory may replace an empty one.
    fs.rename("/d", "/empty")
    assert fs.stat("/empty/sub")
    assert fs.stat("/").st_nlink == 4  # /empty, /full, and "."+".."


def test_rename_over_a_name_keeps_its_place_in_listings(fs: MemFs) -> None:
    for name in ("a", "b", "c"):
        fs.make_file(f"/{name}", name.encode())
    fs.rename("/c", "/a")
    assert fs.names("/") == ["a", "b"]
    assert fs.read_file("/a") == b"c"


def test_link_updates_the_new_parent(fs: MemFs) -> None:
    fs.mkdir("/d")
    fs.make_file("/f")
    fs.age("/d")
    fs.age("/")
    fs.link("/f", "/d/g")
    assert fs.stat("/d").st_mtime_ns > 10**12
    assert fs.stat("/").st_mtime_ns == 10**12


def test_rename_to_another_name_of_the_same_inode_does_nothing(fs: MemFs) -> None:
    fs.make_file("/a", b"A")
    fs.link("/a", "/b")
    fs.rename("/a", "/b")
    assert fs.stat("/a").st_nlink == 2 and fs.stat("/b").st_nlink == 2
    fs.rename("/a", "/a")
    assert fs.read_file("/a") == b"A"


def test_rename_updates_times(fs: MemFs) -> None:
    fs.mkdir("/p")
    fs.mkdir("/q")
    fs.mkdir("/untouched")
    fs.make_file("/p/f")
    for path in ("/p", "/q", "/p/f", "/untouched"):
        fs.age(path)
    fs.rename("/p/f", "/q/f")
    moved = fs.stat("/q/f")
    assert moved.st_ctime_ns > 10**12 and moved.st_mtime_ns == 10**12
    for parent in ("/p", "/q"):
        attr = fs.stat(parent)
        assert attr.st_mtime_ns > 10**12 and attr.st_ctime_ns > 10**12
    assert fs.stat("/untouched").st_mtime_ns == 10**12


# -- sticky directories ------------------------------------------------------------------


def test_sticky_directory_protects_other_users_names(fs: MemFs) -> None:
    root = fs.as_user(ROOT)
    root.mkdir("/tmp", 0o1777)
    fs.make_file("/tmp/mine")
    fs.mkdir("/tmp/mydir")
    other = fs.as_user(OTHER)
    with raises_errno(errno.EPERM):
        other.unlink("/tmp/mine")
    with raises_errno(errno.EPERM):
        other.rmdir("/tmp/mydir")
    with raises_errno(errno.EPERM):
        other.rename("/tmp/mine", "/tmp/stolen")
    other.make_file("/tmp/theirs")
    with raises_errno(errno.EPERM):
        fs.rename("/tmp/mine", "/tmp/theirs")  # would replace another user's file
    fs.rename("/tmp/mine", "/tmp/mine2")
    root.unlink("/tmp/theirs")
    fs.unlink("/tmp/mine2")


# -- setattr -----------------------------------------------------------------------------


def test_chmod_keeps_the_type_and_needs_ownership(fs: MemFs) -> None:
    fs.make_file("/f")
    attr = fs.setattr("/f", mode=0o4711)
    assert stat.S_ISREG(attr.st_mode) and stat.S_IMODE(attr.st_mode) == 0o4711
    with raises_errno(errno.EPERM):
        fs.as_user(OTHER).setattr("/f", mode=0o777)
    assert stat.S_IMODE(fs.as_user(ROOT).setattr("/f", mode=0o600).st_mode) == 0o600


def test_chown_rules(fs: MemFs) -> None:
    fs.make_file("/f")
    with raises_errno(errno.EPERM):
        fs.setattr("/f", uid=2000)
    with raises_errno(errno.EPERM):
        fs.setattr("/f", gid=2000)  # not the caller's group
    with raises_errno(errno.EPERM):
        fs.as_user(OTHER).setattr("/f", gid=2000)
    assert fs.setattr("/f", uid=1000, gid=1000).st_uid == 1000
    attr = fs.as_user(ROOT).setattr("/f", uid=5, gid=6)
    assert (attr.st_uid, attr.st_gid) == (5, 6)


def test_chown_clears_setuid_even_for_root(fs: MemFs) -> None:
    fs.make_file("/f", mode=0o755)
    fs.setattr("/f", mode=0o6755)
    attr = fs.as_user(ROOT).setattr("/f", uid=0)
    assert stat.S_IMODE(attr.st_mode) == 0o755
    # setgid without group execute (mandatory locking marker) survives root's chown.
    fs.as_user(ROOT).setattr("/f", mode=0o2745)
    assert fs.as_user(ROOT).setattr("/f", uid=1).st_mode & stat.S_ISGID
    # Directories keep their bits.
    fs.mkdir("/d", 0o2755)
    assert fs.as_user(ROOT).setattr("/d", uid=3).st_mode & stat.S_ISGID


def test_kill_suid(fs: MemFs) -> None:
    fs.make_file("/f")
    fs.setattr("/f", mode=0o6755)
    assert stat.S_IMODE(fs.setattr("/f", kill_suid=True).st_mode) == 0o755
    fs.setattr("/f", mode=0o6745)
    assert stat.S_IMODE(fs.setattr("/f", kill_suid=True).st_mode) == 0o2745


def test_kill_suid_leaves_directories_alone(fs: MemFs) -> None:
    fs.mkdir("/d", 0o2775)
    assert fs.setattr("/d", kill_suid=True).st_mode & stat.S_ISGID


def test_chmod_by_non_member_drops_setgid(fs: MemFs) -> None:
    fs.make_file("/f")
    fs.as_user(ROOT).setattr("/f", gid=77)
    assert not fs.setattr("/f", mode=0o2755).st_mode & stat.S_ISGID
    assert fs.as_user(ROOT).setattr("/f", mode=0o2755).st_mode & stat.S_ISGID


def test_utimens(fs: MemFs) -> None:
    fs.make_file("/f")
    attr = fs.setattr("/f", atime_ns=1_500_000_000_123_456_789, mtime_ns=1_000_000_000_000_000_001)
    assert attr.st_atime_ns == 1_500_000_000_123_456_789
    assert attr.st_mtime_ns == 1_000_000_000_000_000_001
    assert attr.st_ctime_ns > attr.st_mtime_ns
    before = attr.st_ctime_ns
    attr = fs.setattr("/f", mtime_ns=ops.UTIME_NOW)
    assert attr.st_mtime_ns >= before
    assert attr.st_atime_ns == 1_500_000_000_123_456_789  # None means leave it
    with raises_errno(errno.EPERM):
        fs.as_user(OTHER).setattr("/f", mtime_ns=5)
    with raises_errno(errno.EACCES):
        fs.as_user(OTHER).setattr("/f", mtime_ns=ops.UTIME_NOW)
    fs.setattr("/f", mode=0o666)
    assert fs.as_user(OTHER).setattr("/f", mtime_ns=ops.UTIME_NOW).st_mtime_ns >= before


def test_setattr_changes_ctime_and_works_through_a_handle(fs: MemFs) -> None:
    fh, _ = fs.create("/f")
    fs.age("/f")
    attr = fs.chain.setattr(ops.SetattrRequest(USER, "/f", fh, mode=0o600))
    assert attr.st_ctime_ns > 10**12 and attr.st_mtime_ns == 10**12
    fs.unlink("/f")
    attr = fs.chain.setattr(ops.SetattrRequest(USER, "/f", fh, size=10))
    assert attr.st_size == 10 and attr.st_nlink == 0
    fs.release("/f", fh)


def test_truncate_through_setattr_errors(fs: MemFs) -> None:
    fs.mkdir("/d")
    with raises_errno(errno.EISDIR):
        fs.setattr("/d", size=0)
    fs.chain.symlink(ops.SymlinkRequest(USER, "/l", "x"))
    with raises_errno(errno.EINVAL):
        fs.setattr("/l", size=0)
    fs.make_file("/f")
    with raises_errno(errno.EINVAL):
        fs.setattr("/f", size=-1)
    with raises_errno(errno.EFBIG):
        fs.setattr("/f", size=2**63)


# -- times -------------------------------------------------------------------------------


def test_create_updates_parent_times_only(fs: MemFs) -> None:
    fs.mkdir("/d")
    fs.mkdir("/e")
    fs.age("/d")
    fs.age("/e")
    fs.make_file("/d/f")
    d = fs.stat("/d")
    assert d.st_mtime_ns > 10**12 and d.st_ctime_ns > 10**12 and d.st_atime_ns == 10**12
    assert fs.stat("/e").st_mtime_ns == 10**12
    for op in (lambda: fs.mkdir("/e/x"), lambda: fs.unlink("/d/f"), lambda: fs.rmdir("/e/x")):
        fs.age("/d")
        fs.age("/e")
        op()
        assert max(fs.stat("/d").st_mtime_ns, fs.stat("/e").st_mtime_ns) > 10**12


def test_getattr_and_readdir_do_not_change_mtime(fs: MemFs) -> None:
    fs.mkdir("/d")
    fs.make_file("/d/f", b"abc")
    fs.age("/d")
    fs.age("/d/f")
    fs.stat("/d/f")
    fs.names("/d")
    d = fs.stat("/d")
    assert d.st_mtime_ns == 10**12 and d.st_ctime_ns == 10**12
    assert d.st_atime_ns > 10**12  # readdir is an access (relatime: atime was old)


def test_read_updates_atime_relatime_style(fs: MemFs) -> None:
    fs.make_file("/f", b"abc")
    fs.age("/f")
    assert fs.read_file("/f") == b"abc"
    attr = fs.stat("/f")
    assert attr.st_atime_ns > 10**12
    assert attr.st_mtime_ns == 10**12 and attr.st_ctime_ns == 10**12
    # atime is now newer than mtime and recent: relatime leaves it alone.
    first = attr.st_atime_ns
    fs.read_file("/f")
    assert fs.stat("/f").st_atime_ns == first


def test_write_updates_mtime_and_ctime_not_atime(fs: MemFs) -> None:
    fh, _ = fs.create("/f")
    fs.age("/f")
    fs.write("/f", fh, 0, b"x")
    attr = fs.stat("/f")
    assert attr.st_mtime_ns > 10**12 and attr.st_ctime_ns == attr.st_mtime_ns
    assert attr.st_atime_ns == 10**12
    fs.age("/f")
    assert fs.write("/f", fh, 0) == 0  # an empty write changes nothing
    assert fs.stat("/f").st_mtime_ns == 10**12
    fs.release("/f", fh)


def test_truncate_updates_times_only_when_size_changes(fs: MemFs) -> None:
    fs.make_file("/f", b"abc")
    fs.age("/f")
    attr = fs.setattr("/f", size=3)
    assert attr.st_mtime_ns == 10**12 and attr.st_ctime_ns > 10**12
    fs.age("/f")
    attr = fs.setattr("/f", size=1)
    assert attr.st_mtime_ns > 10**12


def test_times_have_nanosecond_precision(fs: MemFs) -> None:
    fs.make_file("/f")
    attr = fs.setattr("/f", mtime_ns=1_234_567_891_987_654_321)
    assert attr.st_mtime_ns % 1000 == 321


# -- access ------------------------------------------------------------------------------


def _access(fs: MemFs, path: str, mask: int) -> None:
    fs.chain.access(ops.AccessRequest(fs.ctx, path, mask))


def test_access_owner_group_other(fs: MemFs) -> None:
    fs.make_file("/f", mode=0o640)
    _access(fs, "/f", os.R_OK | os.W_OK)
    with raises_errno(errno.EACCES):
        _access(fs, "/f", os.X_OK)
    member = fs.as_user(ops.Context(uid=3000, gid=1000))
    _access(member, "/f", os.R_OK)
    with raises_errno(errno.EACCES):
        _access(member, "/f", os.W_OK)
    other = fs.as_user(OTHER)
    _access(other, "/f", os.F_OK)
    with raises_errno(errno.EACCES):
        _access(other, "/f", os.R_OK)
    # Owner bits decide for the owner even when "other" would allow more.
    fs.setattr("/f", mode=0o007)
    with raises_errno(errno.EACCES):
        _access(fs, "/f", os.R_OK)
    with raises_errno(errno.ENOENT):
        _access(fs, "/nothing", os.F_OK)


def test_access_root_bypass_except_execute(fs: MemFs) -> None:
    fs.make_file("/f", mode=0o000)
    root = fs.as_user(ROOT)
    _access(root, "/f", os.R_OK | os.W_OK)
    with raises_errno(errno.EACCES):
        _access(root, "/f", os.X_OK)
    fs.setattr("/f", mode=0o001)
    _access(root, "/f", os.X_OK)
    fs.mkdir("/d", 0o000)
    _access(root, "/d", os.X_OK | os.R_OK)


# -- xattrs ------------------------------------------------------------------------------


def _setx(fs: MemFs, path: str, name: str, value: bytes, flags: int = 0) -> None:
    fs.chain.setxattr(ops.SetxattrRequest(fs.ctx, path, name, value, flags))


def _getx(fs: MemFs, path: str, name: str) -> bytes:
    return fs.chain.getxattr(ops.GetxattrRequest(fs.ctx, path, name))


def test_xattrs_in_every_namespace(fs: MemFs) -> None:
    fs.make_file("/f")
    names = ["user.a", "trusted.b", "security.c", "system.d", "odd"]
    for i, name in enumerate(names):
        _setx(fs, "/f", name, bytes([i]) * (i + 1))
    assert fs.chain.listxattr(ops.ListxattrRequest(USER, "/f")) == names
    assert _getx(fs, "/f", "security.c") == b"\x02\x02\x02"
    _setx(fs, "/f", "user.a", b"")
    assert _getx(fs, "/f", "user.a") == b""
    fs.chain.removexattr(ops.RemovexattrRequest(USER, "/f", "user.a"))
    with raises_errno(errno.ENODATA):
        _getx(fs, "/f", "user.a")
    with raises_errno(errno.ENODATA):
        fs.chain.removexattr(ops.RemovexattrRequest(USER, "/f", "user.a"))


def test_xattr_flags_and_limits(fs: MemFs) -> None:
    fs.make_file("/f")
    with raises_errno(errno.ENODATA):
        _setx(fs, "/f", "user.x", b"1", os.XATTR_REPLACE)
    _setx(fs, "/f", "user.x", b"1", os.XATTR_CREATE)
    with raises_errno(errno.EEXIST):
        _setx(fs, "/f", "user.x", b"2", os.XATTR_CREATE)
    _setx(fs, "/f", "user.x", b"3", os.XATTR_REPLACE)
    assert _getx(fs, "/f", "user.x") == b"3"
    _setx(fs, "/f", "user." + "n" * 250, b"ok")
    with raises_errno(errno.ERANGE):
        _setx(fs, "/f", "user." + "n" * 251, b"long name")
    with raises_errno(errno.ERANGE):
        _setx(fs, "/f", "", b"no name")
    _setx(fs, "/f", "user.big", b"v" * 65536)
    with raises_errno(errno.E2BIG):
        _setx(fs, "/f", "user.big", b"v" * 65537)
    with raises_errno(errno.EINVAL):
        _setx(fs, "/f", "user.x", b"1", 8)


def test_xattr_set_changes_ctime_and_user_namespace_is_for_files_and_dirs(fs: MemFs) -> None:
    fs.make_file("/f")
    fs.age("/f")
    _setx(fs, "/f", "user.a", b"1")
    assert fs.stat("/f").st_ctime_ns > 10**12
    fs.chain.symlink(ops.SymlinkRequest(USER, "/l", "f"))
    with raises_errno(errno.EPERM):
        _setx(fs, "/l", "user.a", b"1")
    _setx(fs, "/l", "trusted.a", b"1")
    fs.mkdir("/d")
    _setx(fs, "/d", "user.a", b"1")
    with raises_errno(errno.ENOENT):
        _setx(fs, "/nothing", "user.a", b"1")


# -- statfs, inode limit -------------------------------------------------------------------


def test_statfs_reports_capacity_and_inodes() -> None:
    fs = make_fs(MemoryConfig(capacity="8MiB", max_inodes=100))
    before = fs.statfs()
    assert before.blocks * before.frsize == 8 << 20
    assert before.bfree == before.blocks
    assert before.files == 100 and before.ffree == 99
    assert before.namelen == 255
    fs.make_file("/f", b"x" * (1 << 20))
    after = fs.statfs()
    assert before.bfree - after.bfree == (1 << 20) // after.frsize
    assert after.ffree == 98


def test_max_inodes_gives_enospc() -> None:
    fs = make_fs(MemoryConfig(max_inodes=3))
    fs.make_file("/a")
    fs.mkdir("/b")
    with raises_errno(errno.ENOSPC):
        fs.make_file("/c")
    with raises_errno(errno.ENOSPC):
        fs.chain.symlink(ops.SymlinkRequest(USER, "/c", "a"))
    fs.link("/a", "/a2")  # a name is not an inode
    fs.unlink("/a")
    fs.unlink("/a2")
    fs.make_file("/c")
