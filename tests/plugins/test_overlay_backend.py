"""The overlay backend in-process, over memory-backend layers: lookup, merged listings,
copy-up, whiteouts, opaque directories, renames, links, inode numbers, handles."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from tests.plugins.memfs_helpers import ROOT, USER, raises_errno
from tests.plugins.overlay_helpers import Overlay, make_overlay, memory_layer, tree
from vfsframe import ops


@pytest.fixture
def ov() -> Overlay:
    """Two lowers and an upper. lower[0] (top): /a (file "top"), /d/x, /shared/top.
    lower[1] (bottom): /a (file "bottom"), /b, /d/y, /shared/bottom, /deep/one/two/f."""
    top, bottom = memory_layer(), memory_layer()
    top.make_file("/a", b"top")
    top.mkdir("/d")
    top.make_file("/d/x", b"x")
    top.mkdir("/shared")
    top.make_file("/shared/top", b"t")
    bottom.make_file("/a", b"bottom")
    bottom.make_file("/b", b"b" * 5000, mode=0o640)
    bottom.mkdir("/d")
    bottom.make_file("/d/y", b"y")
    bottom.mkdir("/shared")
    bottom.make_file("/shared/bottom", b"s")
    for path in ("/deep", "/deep/one", "/deep/one/two"):
        bottom.mkdir(path)
    bottom.make_file("/deep/one/two/f", b"deep")
    return make_overlay([top, bottom], memory_layer())


def test_lookup_goes_top_to_bottom(ov: Overlay) -> None:
    assert ov.fs.read_file("/a") == b"top"
    assert ov.fs.read_file("/b") == b"b" * 5000
    assert ov.fs.read_file("/deep/one/two/f") == b"deep"
    with raises_errno(errno.ENOENT):
        ov.fs.stat("/missing")
    with raises_errno(errno.ENOTDIR):
        ov.fs.stat("/a/below")


def test_merged_listing_has_each_name_once(ov: Overlay) -> None:
    assert sorted(ov.fs.names("/")) == ["a", "b", "d", "deep", "shared"]
    assert sorted(ov.fs.names("/d")) == ["x", "y"]
    ov.fs.make_file("/d/z", b"new")
    assert sorted(ov.fs.names("/d")) == ["x", "y", "z"]
    assert ov.fs.names("/d")[0] == "z"  # upper names come first


def test_listing_inode_numbers_match_lookups(ov: Overlay) -> None:
    listing = ov.fs.chain.readdir(ops.ReaddirRequest(ROOT, "/"))
    for entry in listing:
        assert entry.ino == ov.fs.stat("/" + entry.name).st_ino
    numbers = [entry.ino for entry in listing]
    assert len(set(numbers)) == len(numbers)  # memory layers reuse numbers; the overlay not


def test_write_copies_up_and_lower_stays(ov: Overlay) -> None:
    ov.lowers[1].setattr("/b", uid=1000, gid=1000, atime_ns=5 * 10**9, mtime_ns=6 * 10**9)
    ov.lowers[1].chain.setxattr(ops.SetxattrRequest(ROOT, "/b", "user.tag", b"v"))
    before = tree(ov.lowers[1])
    attr = ov.fs.stat("/b")
    atime = ov.lowers[1].stat("/b").st_atime_ns  # tree() read it
    fh = ov.fs.open("/b", os.O_WRONLY)
    copied = ov.upper.stat("/b")  # copied up by the open, before any write
    assert (copied.st_uid, copied.st_gid, stat.S_IMODE(copied.st_mode)) == (1000, 1000, 0o640)
    assert (copied.st_atime_ns, copied.st_mtime_ns) == (atime, 6 * 10**9)
    ov.fs.write("/b", fh, 0, b"NEW")
    ov.fs.release("/b", fh)
    assert ov.fs.read_file("/b") == b"NEW" + b"b" * 4997
    assert tree(ov.lowers[1]) == before
    assert ov.upper.chain.getxattr(ops.GetxattrRequest(ROOT, "/b", "user.tag")) == b"v"
    assert ov.fs.stat("/b").st_ino == attr.st_ino  # stable across copy-up


def test_copy_up_creates_parents_with_their_attributes(ov: Overlay) -> None:
    ov.lowers[1].setattr("/deep/one", mode=0o710, uid=7, gid=8)
    ov.fs.setattr("/deep/one/two/f", mode=0o600)
    assert ov.upper.stat("/deep/one/two/f").st_mode & 0o777 == 0o600
    one = ov.upper.stat("/deep/one")
    assert (stat.S_IMODE(one.st_mode), one.st_uid, one.st_gid) == (0o710, 7, 8)
    assert ov.lowers[1].stat("/deep/one/two/f").st_mode & 0o777 == 0o644
    # The work area is empty and never visible.
    assert ov.upper.names("/.wh..wh..work") == []
    assert ".wh..wh..work" not in ov.fs.names("/")
    with raises_errno(errno.ENOENT):
        ov.fs.stat("/.wh..wh..work")


def test_truncate_and_open_trunc_copy_up_without_data(ov: Overlay) -> None:
    ov.fs.setattr("/b", size=10)
    assert ov.fs.read_file("/b") == b"b" * 10
    fh = ov.fs.open("/a", os.O_WRONLY | os.O_TRUNC)
    ov.fs.release("/a", fh)
    assert ov.fs.stat("/a").st_size == 0
    assert ov.lowers[0].read_file("/a") == b"top"


def test_delete_makes_whiteout_and_recreate_replaces_it(ov: Overlay) -> None:
    ov.fs.unlink("/a")
    with raises_errno(errno.ENOENT):
        ov.fs.stat("/a")  # neither lower copy shows through
    assert "a" not in ov.fs.names("/")
    assert ".wh.a" in ov.upper.names("/")
    ov.fs.make_file("/a", b"again")
    assert ov.fs.read_file("/a") == b"again"
    assert ".wh.a" not in ov.upper.names("/")
    ov.fs.unlink("/a")
    with raises_errno(errno.ENOENT):
        ov.fs.stat("/a")
    assert ov.lowers[0].read_file("/a") == b"top"


def test_unlink_of_upper_only_file_leaves_no_whiteout(ov: Overlay) -> None:
    ov.fs.make_file("/new", b"n")
    ov.fs.unlink("/new")
    assert ov.upper.names("/") == []


def test_reserved_names(ov: Overlay) -> None:
    with raises_errno(errno.EINVAL):
        ov.fs.create("/.wh.x")
    with raises_errno(errno.EINVAL):
        ov.fs.mkdir("/.wh..wh..opq")
    with raises_errno(errno.ENOENT):
        ov.fs.stat("/.wh.anything")


def test_directory_over_whiteout_is_opaque(ov: Overlay) -> None:
    ov.fs.unlink("/d/x")
    ov.fs.unlink("/d/y")
    ov.fs.rmdir("/d")
    ov.fs.mkdir("/d")
    assert ov.fs.names("/d") == []
    assert ".wh..wh..opq" in ov.upper.names("/d")
    ov.fs.make_file("/d/z")
    assert ov.fs.names("/d") == ["z"]


def test_rmdir_checks_emptiness_across_layers(ov: Overlay) -> None:
    with raises_errno(errno.ENOTEMPTY):
        ov.fs.rmdir("/d")  # x from the top lower, y from the bottom one
    ov.fs.unlink("/d/x")
    with raises_errno(errno.ENOTEMPTY):
        ov.fs.rmdir("/d")
    ov.fs.unlink("/d/y")
    ov.fs.rmdir("/d")  # the upper copy held only whiteouts
    assert "d" not in ov.fs.names("/")
    with raises_errno(errno.ENOENT):
        ov.fs.stat("/d/x")


def test_rename_file_across_layers(ov: Overlay) -> None:
    ino = ov.fs.stat("/b").st_ino
    ov.fs.rename("/b", "/d/b2")
    assert ov.fs.read_file("/d/b2") == b"b" * 5000
    assert ov.fs.stat("/d/b2").st_ino == ino
    with raises_errno(errno.ENOENT):
        ov.fs.stat("/b")
    assert ov.lowers[1].read_file("/b") == b"b" * 5000
    ov.fs.rename("/d/b2", "/a")  # over a file of two lower layers
    assert ov.fs.read_file("/a") == b"b" * 5000
    with raises_errno(errno.EEXIST):
        ov.fs.rename("/a", "/shared/top", ops.RENAME_NOREPLACE)


def test_rename_of_lower_or_merged_directory_is_exdev(ov: Overlay) -> None:
    with raises_errno(errno.EXDEV):
        ov.fs.rename("/deep", "/deeper")
    ov.fs.make_file("/d/new")  # /d is now merged
    with raises_errno(errno.EXDEV):
        ov.fs.rename("/d", "/d2")
    ov.fs.mkdir("/mine")
    ov.fs.make_file("/mine/f", b"m")
    ov.fs.rename("/mine", "/yours")  # upper-only: an ordinary rename
    assert ov.fs.read_file("/yours/f") == b"m"


def test_upper_directory_renamed_over_lower_name_is_opaque(ov: Overlay) -> None:
    ov.fs.mkdir("/mine")
    ov.fs.unlink("/shared/top")
    ov.fs.unlink("/shared/bottom")
    ov.fs.rename("/mine", "/shared")  # onto an empty merged directory
    assert ov.fs.names("/shared") == []
    assert ".wh..wh..opq" in ov.upper.names("/shared")
    ov.fs.mkdir("/other")
    with raises_errno(errno.ENOTEMPTY):
        ov.fs.rename("/other", "/d")  # /d still has names from the lower layers


def test_rename_exchange_files(ov: Overlay) -> None:
    ov.fs.rename("/a", "/b", ops.RENAME_EXCHANGE)
    assert ov.fs.read_file("/a") == b"b" * 5000
    assert ov.fs.read_file("/b") == b"top"


def test_hard_link_of_lower_file(ov: Overlay) -> None:
    ino = ov.fs.stat("/b").st_ino
    attr = ov.fs.link("/b", "/d/b-link")
    assert attr.st_ino == ino == ov.fs.stat("/b").st_ino == ov.fs.stat("/d/b-link").st_ino
    assert attr.st_nlink == 2
    fh = ov.fs.open("/d/b-link", os.O_WRONLY)
    ov.fs.write("/d/b-link", fh, 0, b"L")
    ov.fs.release("/d/b-link", fh)
    assert ov.fs.read_file("/b")[:2] == b"Lb"


def test_lower_hard_links_stay_one_inode_across_copy_up() -> None:
    lower = memory_layer()
    lower.mkdir("/dir")
    lower.make_file("/one", b"1")
    lower.link("/one", "/dir/two")
    lower.link("/one", "/three")
    ov = make_overlay([lower], memory_layer())
    ino = ov.fs.stat("/one").st_ino
    assert ov.fs.stat("/dir/two").st_ino == ino
    ov.fs.unlink("/three")  # a whited-out name is not linked up
    attr = ov.fs.setattr("/one", mode=0o600)
    assert attr.st_ino == ino == ov.fs.stat("/dir/two").st_ino
    assert ov.fs.stat("/dir/two").st_mode & 0o777 == 0o600
    assert ov.fs.stat("/one").st_nlink == 2
    fh = ov.fs.open("/dir/two", os.O_WRONLY)
    ov.fs.write("/dir/two", fh, 0, b"2")
    ov.fs.release("/dir/two", fh)
    assert ov.fs.read_file("/one") == b"2"
    assert lower.read_file("/one") == b"1" and lower.stat("/one").st_nlink == 3


def test_chmod_chown_utimes_xattrs_copy_up(ov: Overlay) -> None:
    ov.fs.setattr("/a", mode=0o600, uid=1000, gid=1000, mtime_ns=10**9)
    attr = ov.fs.stat("/a")
    assert (stat.S_IMODE(attr.st_mode), attr.st_uid, attr.st_mtime_ns) == (0o600, 1000, 10**9)
    assert ov.lowers[0].stat("/a").st_mode & 0o777 == 0o644
    ov.fs.chain.setxattr(ops.SetxattrRequest(ROOT, "/shared/top", "user.k", b"1"))
    assert ov.fs.chain.listxattr(ops.ListxattrRequest(ROOT, "/shared/top")) == ["user.k"]
    with raises_errno(errno.ENODATA):
        ov.fs.chain.removexattr(ops.RemovexattrRequest(ROOT, "/d/y", "user.none"))
    assert sorted(ov.upper.names("/")) == [".wh..wh..work", "a", "shared"]  # not /d/y


def test_directory_chmod_copies_the_directory_only(ov: Overlay) -> None:
    ov.fs.setattr("/d", mode=0o700)
    assert stat.S_IMODE(ov.fs.stat("/d").st_mode) == 0o700
    assert ov.upper.names("/d") == []
    assert sorted(ov.fs.names("/d")) == ["x", "y"]


def test_read_only_overlay_refuses_changes() -> None:
    lower = memory_layer()
    lower.make_file("/f", b"data")
    ov = make_overlay([lower])
    assert ov.fs.read_file("/f") == b"data"
    for change in (
        lambda: ov.fs.open("/f", os.O_WRONLY),
        lambda: ov.fs.create("/g"),
        lambda: ov.fs.unlink("/f"),
        lambda: ov.fs.mkdir("/d"),
        lambda: ov.fs.setattr("/f", mode=0o600),
        lambda: ov.fs.rename("/f", "/h"),
    ):
        with raises_errno(errno.EROFS):
            change()
    with raises_errno(errno.EROFS):
        ov.fs.chain.access(ops.AccessRequest(ROOT, "/f", os.W_OK))


def test_read_only_handle_follows_a_later_copy_up(ov: Overlay) -> None:
    reader = ov.fs.open("/a", os.O_RDONLY)
    assert ov.fs.read("/a", reader, 0, 10) == b"top"
    writer = ov.fs.open("/a", os.O_RDWR)
    ov.fs.write("/a", writer, 0, b"TOP!")
    assert ov.fs.read("/a", reader, 0, 10) == b"TOP!"
    ov.fs.release("/a", writer)
    ov.fs.release("/a", reader)


def test_writing_through_a_lower_handle_is_ebadf(ov: Overlay) -> None:
    reader = ov.fs.open("/b", os.O_RDONLY)
    with raises_errno(errno.EBADF):
        ov.fs.write("/b", reader, 0, b"x")
    ov.fs.release("/b", reader)


def test_removing_a_lower_entry_checks_permissions(ov: Overlay) -> None:
    user = ov.fs.as_user(USER)
    with raises_errno(errno.EACCES):
        user.unlink("/a")  # / is root's, 0755
    ov.fs.setattr("/shared", mode=0o1777)
    with raises_errno(errno.EPERM):
        user.unlink("/shared/top")  # sticky, and root owns it
    assert "top" in ov.fs.names("/shared")


def test_new_files_belong_to_the_caller(ov: Overlay) -> None:
    ov.fs.setattr("/d", mode=0o777)
    user = ov.fs.as_user(USER)
    attr = user.make_file("/d/mine", b"m")
    assert (attr.st_uid, attr.st_gid) == (1000, 1000)


def test_symlinks_and_special_files_copy_up() -> None:
    lower = memory_layer()
    lower.chain.symlink(ops.SymlinkRequest(ROOT, "/link", "target/path"))
    lower.chain.mknod(ops.MknodRequest(ROOT, "/fifo", stat.S_IFIFO | 0o640))
    ov = make_overlay([lower], memory_layer())
    ov.fs.rename("/link", "/link2")
    ov.fs.setattr("/fifo", mode=0o600)
    assert ov.fs.chain.readlink(ops.ReadlinkRequest(ROOT, "/link2")) == "target/path"
    assert stat.S_ISFIFO(ov.upper.stat("/fifo").st_mode)


def test_sparse_file_copy_up_keeps_holes() -> None:
    lower = memory_layer()
    fh, _ = lower.create("/sparse")
    lower.write("/sparse", fh, 8 << 20, b"end")
    lower.release("/sparse", fh)
    ov = make_overlay([lower], memory_layer())
    ov.fs.setattr("/sparse", mode=0o600)
    copied = ov.upper.stat("/sparse")
    assert copied.st_size == (8 << 20) + 3
    assert copied.st_blocks * 512 < 2 << 20
    assert ov.fs.read_file("/sparse")[-3:] == b"end"


def test_unlinked_open_file_keeps_its_inode(ov: Overlay) -> None:
    fh = ov.fs.open("/b", os.O_RDWR)
    ino = ov.fs.stat("/b").st_ino
    ov.fs.unlink("/b")
    assert ov.fs.stat("", fh).st_ino == ino
    assert ov.fs.read("", fh, 0, 3) == b"bbb"
    ov.fs.release("", fh)


def test_statfs_and_access(ov: Overlay) -> None:
    assert ov.fs.statfs().bsize > 0
    ov.fs.chain.access(ops.AccessRequest(ROOT, "/b", os.R_OK | os.W_OK))
    with raises_errno(errno.EACCES):
        ov.fs.chain.access(ops.AccessRequest(USER, "/b", os.R_OK))  # 0640, root's


def test_three_lowers_with_whiteouts_in_the_layers() -> None:
    """OCI-style lower layers: .wh.NAME and .wh..wh..opq written by whoever made them."""
    base, middle, top = memory_layer(), memory_layer(), memory_layer()
    base.mkdir("/etc")
    base.make_file("/etc/passwd", b"root")
    base.make_file("/etc/gone", b"g")
    base.mkdir("/opt")
    base.make_file("/opt/old", b"o")
    middle.mkdir("/etc")
    middle.make_file("/etc/.wh.gone")
    middle.make_file("/etc/hosts", b"h")
    middle.mkdir("/opt")
    middle.make_file("/opt/.wh..wh..opq")
    middle.make_file("/opt/new", b"n")
    top.mkdir("/etc")
    top.chain.mknod(ops.MknodRequest(ROOT, "/etc/hosts", stat.S_IFCHR | 0o600, 0))
    ov = make_overlay([top, middle, base])
    assert sorted(ov.fs.names("/etc")) == ["passwd"]
    assert ov.fs.names("/opt") == ["new"]
    with raises_errno(errno.ENOENT):
        ov.fs.stat("/opt/old")
    with raises_errno(errno.ENOENT):
        ov.fs.stat("/etc/hosts")


def test_readdir_through_the_session_snapshot(ov: Overlay) -> None:
    """The session lists at opendir; the listing stays as it was while entries change."""
    handle = ov.fs.chain.opendir(ops.OpendirRequest(ROOT, "/d"))
    first = list(ov.fs.chain.readdir(ops.ReaddirRequest(ROOT, "/d", handle)))
    ov.fs.unlink("/d/x")
    assert sorted(entry.name for entry in first) == ["x", "y"]
    ov.fs.chain.releasedir(ops.ReleasedirRequest(ROOT, "/d", handle))


def test_copy_file_range_within_and_across_layers(ov: Overlay) -> None:
    source = ov.fs.open("/b", os.O_RDONLY)  # a lower handle
    target, _ = ov.fs.create("/copy")
    count = ov.fs.chain.copy_file_range(
        ops.CopyFileRangeRequest(ROOT, "/b", source, 0, "/copy", target, 0, 100)
    )
    assert count == 100
    other, _ = ov.fs.create("/copy2")
    count = ov.fs.chain.copy_file_range(
        ops.CopyFileRangeRequest(ROOT, "/copy", target, 0, "/copy2", other, 10, 50)
    )
    assert count == 50
    for path, fh in (("/b", source), ("/copy", target), ("/copy2", other)):
        ov.fs.release(path, fh)
    assert ov.fs.read_file("/copy") == b"b" * 100
    assert ov.fs.read_file("/copy2") == bytes(10) + b"b" * 50
    with raises_errno(errno.EBADF):
        reader = ov.fs.open("/a", os.O_RDONLY)
        ov.fs.chain.copy_file_range(
            ops.CopyFileRangeRequest(ROOT, "/copy", target, 0, "/a", reader, 0, 1)
        )


def test_switched_handle_releases_both_layer_handles(ov: Overlay) -> None:
    """The lower handle a reader moved away from is released with the reader, not before
    (another thread may still be reading through it)."""
    lower_backend = ov.lowers[0].chain.backend
    reader = ov.fs.open("/a", os.O_RDONLY)
    writer = ov.fs.open("/a", os.O_WRONLY)
    ov.fs.write("/a", writer, 0, b"new")
    ov.fs.release("/a", writer)
    assert ov.fs.read("/a", reader, 0, 3) == b"new"
    assert reader.retired and reader.retired[0][0].index == 1
    node = lower_backend._lookup("/a")
    assert node.open_count == 1  # still held
    ov.fs.release("/a", reader)
    assert node.open_count == 0


def test_a_0_0_device_made_in_the_overlay_is_a_device(ov: Overlay) -> None:
    """Device whiteouts are read in lower layers only; the upper layer's are ordinary."""
    ov.fs.chain.mknod(ops.MknodRequest(ROOT, "/dev0", stat.S_IFCHR | 0o600, 0))
    assert stat.S_ISCHR(ov.fs.stat("/dev0").st_mode)
    assert "dev0" in ov.fs.names("/")
