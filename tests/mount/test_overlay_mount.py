"""The overlay backend mounted through the host kernel: passthrough lower layers (host
directories, read-only) under a memory or passthrough upper layer, driven with os calls and
ordinary tools; lower directories are checksummed before and after to prove they stay intact."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_fuse
from vfsframe.testing.mount import mounted_share, share_config

pytestmark = pytest.mark.mount


def checksum(root: Path) -> dict[str, str]:
    """Every entry below ``root``: type, mode, owner, mtime and content digest."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            st = os.lstat(path)
            key = str(path.relative_to(root))
            meta = f"{st.st_mode:o} {st.st_uid}:{st.st_gid} {st.st_mtime_ns} {st.st_ino}"
            if stat.S_ISREG(st.st_mode):
                meta += " " + hashlib.sha256(path.read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                meta += " -> " + os.readlink(path)
            out[key] = meta
    return out


def listing(root: Path) -> dict[str, bytes | None]:
    """Relative path → content (None for directories) of a whole tree, through the mount."""
    out: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            out[str((Path(dirpath) / name).relative_to(root))] = None
        for name in filenames:
            path = Path(dirpath) / name
            out[str(path.relative_to(root))] = path.read_bytes()
    return out


def passthrough(root: Path, readonly: bool = True) -> dict[str, Any]:
    return {"type": "passthrough", "root": str(root), "readonly": readonly}


@pytest.fixture(params=["memory", "passthrough"])
def upper_kind(request: pytest.FixtureRequest) -> str:
    return request.param


class Stack:
    """Lower directories (topmost first), an upper config, and the mountpoint once mounted."""

    def __init__(self, tmp_path: Path, mountpoint: Path, upper_kind: str, count: int = 1) -> None:
        self.lowers = [tmp_path / f"lower{i}" for i in range(count)]
        for lower in self.lowers:
            lower.mkdir()
        self.upper_dir = tmp_path / "upper"
        self.upper_dir.mkdir()
        self.upper_kind = upper_kind
        self.mnt = mountpoint

    def upper(self) -> dict[str, Any]:
        if self.upper_kind == "memory":
            return {"type": "memory", "capacity": "256MiB"}
        return passthrough(self.upper_dir, readonly=False)

    def checksums(self) -> list[dict[str, str]]:
        return [checksum(lower) for lower in self.lowers]

    def mount(self) -> Any:
        backend = {"type": "overlay", "lower": [passthrough(p) for p in self.lowers]}
        backend["upper"] = self.upper()
        return mounted_share(self.mnt, share_config(backend))


@pytest.fixture
def one_layer(tmp_path: Path, mountpoint: Path, upper_kind: str) -> Iterator[Stack]:
    """One passthrough lower with a small tree, mounted under a memory or passthrough upper."""
    require_fuse()
    stack = Stack(tmp_path, mountpoint, upper_kind)
    lower = stack.lowers[0]
    (lower / "dir" / "sub").mkdir(parents=True)
    (lower / "dir" / "file.txt").write_text("hello\n" * 1000)
    (lower / "dir" / "sub" / "bin").write_bytes(os.urandom(300_000))
    (lower / "top.txt").write_text("top\n")
    (lower / "mode.txt").write_text("m")
    os.chmod(lower / "mode.txt", 0o640)
    os.symlink("dir/file.txt", lower / "link")
    os.link(lower / "top.txt", lower / "top-hardlink")
    os.setxattr(lower / "top.txt", "user.origin", b"lower")
    os.utime(lower / "dir" / "file.txt", ns=(1_000_000_000, 2_000_000_000))
    with stack.mount():
        yield stack


def test_reads_lower_files(one_layer: Stack) -> None:
    mnt, lower = one_layer.mnt, one_layer.lowers[0]
    assert (mnt / "dir" / "file.txt").read_text() == "hello\n" * 1000
    assert (mnt / "dir" / "sub" / "bin").read_bytes() == (
        lower / "dir" / "sub" / "bin"
    ).read_bytes()
    assert os.readlink(mnt / "link") == "dir/file.txt"
    assert (mnt / "link").read_text() == "hello\n" * 1000
    assert sorted(os.listdir(mnt)) == ["dir", "link", "mode.txt", "top-hardlink", "top.txt"]
    st = os.stat(mnt / "dir" / "file.txt")
    assert st.st_mtime_ns == 2_000_000_000
    assert os.stat(mnt / "top.txt").st_ino == os.stat(mnt / "top-hardlink").st_ino
    assert os.getxattr(mnt / "top.txt", "user.origin") == b"lower"


def test_write_copies_up_and_lower_is_byte_identical(one_layer: Stack) -> None:
    mnt = one_layer.mnt
    before = one_layer.checksums()
    ino = os.stat(mnt / "dir" / "file.txt").st_ino
    with open(mnt / "dir" / "file.txt", "r+b") as f:
        f.seek(6)
        f.write(b"WORLD\n")
    with open(mnt / "dir" / "sub" / "bin", "ab") as f:
        f.write(b"appended")
    with open(mnt / "top.txt", "w") as f:  # O_TRUNC
        f.write("rewritten\n")
    assert (mnt / "dir" / "file.txt").read_text().startswith("hello\nWORLD\nhello\n")
    assert (mnt / "dir" / "sub" / "bin").read_bytes().endswith(b"appended")
    assert (mnt / "top.txt").read_text() == "rewritten\n"
    assert os.stat(mnt / "dir" / "file.txt").st_ino == ino
    # Copied-up files keep mode, owner and xattrs.
    assert os.getxattr(mnt / "top.txt", "user.origin") == b"lower"
    os.truncate(mnt / "mode.txt", 0)
    assert stat.S_IMODE(os.stat(mnt / "mode.txt").st_mode) == 0o640
    assert one_layer.checksums() == before


def test_open_reader_sees_the_copied_up_data(one_layer: Stack) -> None:
    mnt = one_layer.mnt
    with open(mnt / "mode.txt", "rb", buffering=0) as reader:
        assert reader.read() == b"m"
        with open(mnt / "mode.txt", "r+b", buffering=0) as writer:
            writer.write(b"M!")
        reader.seek(0)
        os.posix_fadvise(reader.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        assert reader.read() == b"M!"


def test_delete_and_recreate(one_layer: Stack) -> None:
    mnt = one_layer.mnt
    before = one_layer.checksums()
    os.unlink(mnt / "top.txt")
    assert not (mnt / "top.txt").exists()
    assert "top.txt" not in os.listdir(mnt)
    assert (mnt / "top-hardlink").read_text() == "top\n"  # the other name stays
    (mnt / "top.txt").write_text("new\n")
    assert (mnt / "top.txt").read_text() == "new\n"
    os.unlink(mnt / "top.txt")
    assert not (mnt / "top.txt").exists()
    subprocess.run(["rm", "-rf", str(mnt / "dir")], check=True)
    assert not (mnt / "dir").exists()
    assert one_layer.checksums() == before


def test_opaque_directory(one_layer: Stack) -> None:
    mnt = one_layer.mnt
    before = one_layer.checksums()
    subprocess.run(["rm", "-rf", str(mnt / "dir")], check=True)
    os.mkdir(mnt / "dir")
    assert os.listdir(mnt / "dir") == []  # nothing of the lower dir shows through
    (mnt / "dir" / "fresh").write_text("f")
    assert os.listdir(mnt / "dir") == ["fresh"]
    assert not (mnt / "dir" / "file.txt").exists()
    with pytest.raises(OSError) as info:
        os.rmdir(mnt / "dir")
    assert info.value.errno == errno.ENOTEMPTY
    os.unlink(mnt / "dir" / "fresh")
    os.rmdir(mnt / "dir")
    assert not (mnt / "dir").exists()
    assert one_layer.checksums() == before
    if one_layer.upper_kind == "passthrough":
        names = os.listdir(one_layer.upper_dir)
        assert ".wh.dir" in names and "dir" not in names


def test_renames(one_layer: Stack) -> None:
    mnt = one_layer.mnt
    before = one_layer.checksums()
    ino = os.stat(mnt / "dir" / "file.txt").st_ino
    os.rename(mnt / "dir" / "file.txt", mnt / "moved.txt")
    assert (mnt / "moved.txt").read_text() == "hello\n" * 1000
    assert os.stat(mnt / "moved.txt").st_ino == ino
    assert not (mnt / "dir" / "file.txt").exists()
    os.rename(mnt / "moved.txt", mnt / "top.txt")  # over another lower file
    assert (mnt / "top.txt").read_text() == "hello\n" * 1000
    # Directories that reach into a lower layer: EXDEV, and mv copies instead.
    with pytest.raises(OSError) as info:
        os.rename(mnt / "dir", mnt / "dir2")
    assert info.value.errno == errno.EXDEV
    subprocess.run(["mv", str(mnt / "dir"), str(mnt / "dir2")], check=True)
    assert sorted(os.listdir(mnt / "dir2")) == ["sub"]
    assert not (mnt / "dir").exists()
    # A directory made in the upper layer renames like any other.
    os.makedirs(mnt / "mine" / "deep")
    os.rename(mnt / "mine", mnt / "yours")
    assert os.listdir(mnt / "yours") == ["deep"]
    assert one_layer.checksums() == before


def test_hard_links(one_layer: Stack) -> None:
    mnt = one_layer.mnt
    before = one_layer.checksums()
    os.link(mnt / "dir" / "file.txt", mnt / "linked.txt")
    first, second = os.stat(mnt / "dir" / "file.txt"), os.stat(mnt / "linked.txt")
    assert first.st_ino == second.st_ino and second.st_nlink == 2
    with open(mnt / "linked.txt", "r+") as f:
        f.write("LINKED")
    assert (mnt / "dir" / "file.txt").read_text().startswith("LINKED")
    os.unlink(mnt / "dir" / "file.txt")
    assert os.stat(mnt / "linked.txt").st_nlink == 1
    assert one_layer.checksums() == before


def test_writing_one_name_of_a_lower_hard_link_keeps_the_link(one_layer: Stack) -> None:
    """The copy-up links the other names of a lower hard link to the copy: one inode."""
    mnt = one_layer.mnt
    before = one_layer.checksums()
    ino = os.stat(mnt / "top-hardlink").st_ino
    with open(mnt / "top.txt", "a") as f:
        f.write("more\n")
    assert (mnt / "top.txt").read_text() == "top\nmore\n"
    assert (mnt / "top-hardlink").read_text() == "top\nmore\n"
    assert os.stat(mnt / "top.txt").st_ino == os.stat(mnt / "top-hardlink").st_ino == ino
    assert os.stat(mnt / "top.txt").st_nlink == 2
    assert one_layer.checksums() == before


def test_chmod_of_lower_file(one_layer: Stack) -> None:
    mnt = one_layer.mnt
    before = one_layer.checksums()
    ino = os.stat(mnt / "mode.txt").st_ino
    os.chmod(mnt / "mode.txt", 0o600)
    os.chown(mnt / "mode.txt", 1234, 1234)
    st = os.stat(mnt / "mode.txt")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_ino) == (0o600, 1234, ino)
    assert (mnt / "mode.txt").read_text() == "m"
    os.chmod(mnt / "dir", 0o700)  # a directory: copied up alone, still merged
    assert sorted(os.listdir(mnt / "dir")) == ["file.txt", "sub"]
    assert one_layer.checksums() == before


def test_cp_and_diff_through_the_overlay(one_layer: Stack, tmp_path: Path) -> None:
    """Copy the merged tree out with cp -a and compare it with the lower layer."""
    out = tmp_path / "out"
    subprocess.run(["cp", "-a", f"{one_layer.mnt}/.", str(out)], check=True)
    done = subprocess.run(
        ["diff", "-r", "--no-dereference", str(one_layer.lowers[0]), str(out)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_merged_listing_across_three_layers(
    tmp_path: Path, mountpoint: Path, upper_kind: str
) -> None:
    require_fuse()
    stack = Stack(tmp_path, mountpoint, upper_kind, count=3)
    top, middle, bottom = stack.lowers
    for layer, names in ((top, "ab"), (middle, "bc"), (bottom, "cd")):
        (layer / "shared").mkdir()
        for name in names:
            (layer / "shared" / name).write_text(f"{name} from {layer.name}")
        (layer / f"only-{layer.name}").write_text(layer.name)
    # The middle layer deletes bottom's d (OCI whiteout) and hides bottom's /gone dir.
    (middle / "shared" / ".wh.d").touch()
    (bottom / "gone").mkdir()
    (bottom / "gone" / "x").touch()
    (middle / "gone").mkdir()
    (middle / "gone" / ".wh..wh..opq").touch()
    (middle / "gone" / "y").touch()
    before = stack.checksums()
    with stack.mount():
        mnt = stack.mnt
        assert sorted(os.listdir(mnt / "shared")) == ["a", "b", "c"]
        assert (mnt / "shared" / "b").read_text() == "b from lower0"
        assert (mnt / "shared" / "c").read_text() == "c from lower1"
        assert not (mnt / "shared" / "d").exists()
        assert os.listdir(mnt / "gone") == ["y"]
        assert sorted(os.listdir(mnt)) == [
            "gone",
            "only-lower0",
            "only-lower1",
            "only-lower2",
            "shared",
        ]
        (mnt / "shared" / "e").write_text("e")
        os.unlink(mnt / "shared" / "c")
        listed = subprocess.run(["ls", "-1", str(mnt / "shared")], capture_output=True, text=True)
        assert listed.stdout.split() == ["a", "b", "e"]
        inos = [os.stat(mnt / "shared" / name).st_ino for name in ("a", "b", "e")]
        assert len(set(inos)) == 3
    assert stack.checksums() == before


def _tar_layer(members: dict[str, bytes | None]) -> bytes:
    """A layer tarball: name → file content, or None for a directory."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(content), 0o644
                tar.addfile(info, io.BytesIO(content))
    return data.getvalue()


def test_unpacked_oci_image_layers(tmp_path: Path, mountpoint: Path, upper_kind: str) -> None:
    """Two image layers as an OCI image has them: tarballs with .wh. entries, unpacked each
    into a directory, used directly as lower layers (topmost first)."""
    require_fuse()
    base = _tar_layer(
        {
            "etc": None,
            "etc/hostname": b"image\n",
            "etc/passwd": b"root:x:0:0\n",
            "etc/motd": b"welcome\n",
            "opt": None,
            "opt/app": None,
            "opt/app/v1.bin": b"\x01" * 4096,
            "opt/app/config": b"old\n",
            "usr": None,
            "usr/bin": None,
            "usr/bin/tool": b"#!/bin/sh\necho tool\n",
        }
    )
    change = _tar_layer(
        {
            "etc": None,
            "etc/.wh.motd": b"",
            "etc/hostname": b"changed\n",
            "opt": None,
            "opt/app": None,
            "opt/app/.wh..wh..opq": b"",
            "opt/app/v2.bin": b"\x02" * 4096,
            "usr": None,
            "usr/.wh.bin": b"",
        }
    )
    stack = Stack(tmp_path, mountpoint, upper_kind, count=2)
    for directory, blob in zip(stack.lowers, (change, base), strict=True):
        with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
            tar.extractall(directory, filter="tar")
    before = stack.checksums()
    with stack.mount():
        view = listing(stack.mnt)
        assert view == {
            "etc": None,
            "opt": None,
            "usr": None,
            "etc/hostname": b"changed\n",
            "etc/passwd": b"root:x:0:0\n",
            "opt/app": None,
            "opt/app/v2.bin": b"\x02" * 4096,
        }
        # The merged image is writable on top like a container's root.
        (stack.mnt / "etc" / "motd").write_text("mine\n")
        with open(stack.mnt / "etc" / "passwd", "a") as f:
            f.write("user:x:1000:1000\n")
        os.makedirs(stack.mnt / "usr" / "bin")
        assert os.listdir(stack.mnt / "usr" / "bin") == []
        assert (stack.mnt / "etc" / "passwd").read_text().count("\n") == 2
    assert stack.checksums() == before


def test_layers_with_their_own_middleware(tmp_path: Path, mountpoint: Path) -> None:
    """A lower layer behind a cache and a log of its own: the log sees that layer's operations
    with that layer's paths, and nothing of the upper layer's."""
    require_fuse()
    lower = tmp_path / "lower"
    (lower / "data").mkdir(parents=True)
    (lower / "data" / "blob").write_bytes(b"z" * 100_000)
    log = tmp_path / "lower.log"
    backend = {
        "type": "overlay",
        "lower": [
            {
                "backend": passthrough(lower),
                "middleware": [{"type": "log", "path": str(log)}, {"type": "cache"}],
            }
        ],
        "upper": {"type": "memory"},
    }
    before = checksum(lower)
    with mounted_share(mountpoint, share_config(backend)):
        assert (mountpoint / "data" / "blob").read_bytes() == b"z" * 100_000
        (mountpoint / "data" / "new").write_text("upper only")
        assert sorted(os.listdir(mountpoint / "data")) == ["blob", "new"]
    lines = log.read_text().splitlines()
    assert any("/data/blob" in line for line in lines), lines[:20]
    assert not any("/data/new" in line and "create" in line for line in lines)
    assert checksum(lower) == before


def test_passthrough_upper_persists_across_remounts(tmp_path: Path, mountpoint: Path) -> None:
    """Whiteouts, opaque markers and copies are plain files in the upper directory: a new
    server over the same directories shows the same tree; a crashed copy-up's leftovers in
    the work area are cleared."""
    require_fuse()
    stack = Stack(tmp_path, mountpoint, "passthrough")
    lower = stack.lowers[0]
    (lower / "keep").write_text("k")
    (lower / "drop").write_text("d")
    (lower / "untouched").write_text("u")
    (lower / "dir").mkdir()
    (lower / "dir" / "old").write_text("o")
    before = stack.checksums()
    with stack.mount():
        os.unlink(mountpoint / "drop")
        subprocess.run(["rm", "-rf", str(mountpoint / "dir")], check=True)
        os.mkdir(mountpoint / "dir")
        (mountpoint / "dir" / "new").write_text("n")
        (mountpoint / "keep").write_text("changed")
        first = listing(mountpoint)
    work = stack.upper_dir / ".wh..wh..work"
    (work / "leftover").write_text("from a crash")
    with stack.mount():
        assert listing(mountpoint) == first
        os.chmod(mountpoint / "untouched", 0o600)  # the first copy-up of this run
        assert sorted(os.listdir(mountpoint)) == ["dir", "keep", "untouched"]
    assert os.listdir(work) == []
    assert first == {"dir": None, "dir/new": b"n", "keep": b"changed", "untouched": b"u"}
    assert stack.checksums() == before


def test_tar_over_the_lower_tree_then_remove_everything(one_layer: Stack, tmp_path: Path) -> None:
    """Ordinary tools over a merged tree: unpack a tree over the lower names (replacing files,
    merging directories), compare, then rm -rf everything: the root is empty."""
    mnt = one_layer.mnt
    before = one_layer.checksums()
    source = tmp_path / "source"
    (source / "dir" / "sub").mkdir(parents=True)
    (source / "dir" / "file.txt").write_text("replaced\n")
    (source / "dir" / "sub" / "added").write_bytes(os.urandom(70_000))
    (source / "extra").mkdir()
    (source / "extra" / "f").write_text("f")
    archive = tmp_path / "tree.tar"
    subprocess.run(["tar", "cf", str(archive), "-C", str(source), "."], check=True)
    subprocess.run(["tar", "xf", str(archive), "-C", str(mnt)], check=True)
    assert (mnt / "dir" / "file.txt").read_text() == "replaced\n"
    assert sorted(os.listdir(mnt / "dir" / "sub")) == ["added", "bin"]
    assert (mnt / "dir" / "sub" / "added").read_bytes() == (source / "dir/sub/added").read_bytes()
    found = subprocess.run(["find", ".", "-type", "f"], cwd=mnt, capture_output=True, text=True)
    assert sorted(found.stdout.split()) == [
        "./dir/file.txt",
        "./dir/sub/added",
        "./dir/sub/bin",
        "./extra/f",
        "./mode.txt",
        "./top-hardlink",
        "./top.txt",
    ]
    for name in os.listdir(mnt):
        subprocess.run(["rm", "-rf", str(mnt / name)], check=True)
    assert os.listdir(mnt) == []
    assert one_layer.checksums() == before
