"""The objectstore backend through the host kernel, against the local store and a moto S3
endpoint on loopback: whole trees, random I/O, large renames, multipart, two mounts of one
bucket, and an endpoint outage in the middle of a write."""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import random
import stat
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.objectstore.conftest import TcpProxy, objectstore_mount, s3_client, s3_store

pytestmark = pytest.mark.mount
libc = ctypes.CDLL(None, use_errno=True)


def run(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, f"{command} failed: {done.stderr}"
    return done.stdout


def digests(root: Path) -> dict[str, tuple[str, int]]:
    """relative path → (sha256 or link target or "dir", permission bits)."""
    found = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(directory) / name
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                what = "-> " + os.readlink(path)
            elif stat.S_ISDIR(st.st_mode):
                what = "dir"
            else:
                what = hashlib.sha256(path.read_bytes()).hexdigest()
            found[str(path.relative_to(root))] = (what, stat.S_IMODE(st.st_mode))
    return found


def make_tree(root: Path, rng: random.Random) -> None:
    (root / "a" / "b" / "c").mkdir(parents=True)
    (root / "empty-dir").mkdir()
    for index in range(40):
        directory = root / rng.choice(["", "a", "a/b", "a/b/c"])
        size = rng.choice([0, 1, 100, 4096, 65537, 300_000, 2_000_000])
        (directory / f"file-{index}.bin").write_bytes(rng.randbytes(size))
    (root / "name with spaces \u00e9").write_text("x")
    os.symlink("a/b/file.txt", root / "link")
    os.symlink("/nonexistent/target", root / "dangling")
    (root / "a" / "b" / "file.txt").write_text("hello\n" * 100)
    os.chmod(root / "a" / "b" / "file.txt", 0o640)
    os.chmod(root / "a" / "b" / "c", 0o700)
    os.utime(root / "a" / "file-x", ns=(1, 2)) if (root / "a" / "file-x").exists() else None


def test_tree_copy_in_and_out(mounted: Path, tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    make_tree(source, random.Random(5))
    os.utime(source / "a" / "b" / "file.txt", ns=(1_000_000_000, 1_500_000_000_123))
    run("cp", "-a", f"{source}/.", str(mounted))
    assert digests(mounted) == digests(source)
    back = tmp_path / "back"
    run("cp", "-a", f"{mounted}/.", str(back))
    assert digests(back) == digests(source)
    run("diff", "-r", "--no-dereference", str(source), str(back))
    assert os.stat(mounted / "a" / "b" / "file.txt").st_mtime_ns == 1_500_000_000_123


def test_random_writes_appends_truncate(mounted: Path, tmp_path: Path) -> None:
    rng = random.Random(7)
    reference = tmp_path / "reference"
    target = mounted / "file"
    initial = rng.randbytes(3_000_000)
    reference.write_bytes(initial)
    target.write_bytes(initial)
    with open(reference, "r+b") as ref, open(target, "r+b") as out:
        for _ in range(200):
            offset = rng.randrange(0, 4_000_000)
            data = rng.randbytes(rng.randrange(1, 70_000))
            for f in (ref, out):
                f.seek(offset)
                f.write(data)
        out.flush()
        os.fsync(out.fileno())
    assert target.read_bytes() == reference.read_bytes()
    for _ in range(5):  # appends through O_APPEND
        data = rng.randbytes(rng.randrange(1, 200_000))
        for path in (reference, target):
            with open(path, "ab") as f:
                f.write(data)
    assert target.read_bytes() == reference.read_bytes()
    for size in (1_234_567, 5_000_000, 0, 10):  # shrink, extend with zeros, empty, grow
        os.truncate(reference, size)
        os.truncate(target, size)
        assert target.stat().st_size == size
        assert target.read_bytes() == reference.read_bytes()
    with open(target, "r+b") as f:  # ftruncate on an open file, then write past the end
        f.truncate(3)
        f.seek(100)
        f.write(b"end")
    assert target.read_bytes() == b"\0" * 3 + b"\0" * 97 + b"end"


def test_writeback_cache(mountpoint: Path, store_config: dict[str, Any], tmp_path: Path) -> None:
    """With the kernel's writeback cache, writes arrive late, page-sized and through any
    handle; the result must still be what was written."""
    rng = random.Random(11)
    reference = tmp_path / "reference"
    with objectstore_mount(mountpoint, store_config, {"writeback_cache": True}) as mounted:
        target = mounted / "file"
        for path in (reference, target):
            path.write_bytes(b"")
        for _ in range(100):
            offset, data = rng.randrange(0, 1_000_000), rng.randbytes(rng.randrange(1, 20_000))
            for path in (reference, target):
                with open(path, "r+b") as f:
                    f.seek(offset)
                    f.write(data)
        for path in (reference, target):
            with open(path, "ab") as f:
                f.write(b"appended")
        assert target.read_bytes() == reference.read_bytes()
    with objectstore_mount(mountpoint, store_config) as mounted:
        assert (mounted / "file").read_bytes() == reference.read_bytes()


def test_namespace_semantics(mounted: Path) -> None:
    (mounted / "d" / "sub").mkdir(parents=True)
    with pytest.raises(OSError) as caught:
        os.rmdir(mounted / "d")
    assert caught.value.errno == errno.ENOTEMPTY
    with pytest.raises(FileExistsError):
        (mounted / "d").mkdir()
    (mounted / "f").write_bytes(b"data")
    with pytest.raises(OSError) as caught:
        os.link(mounted / "f", mounted / "hard")
    assert caught.value.errno == errno.EPERM
    with pytest.raises(OSError) as caught:
        os.mkfifo(mounted / "fifo")
    assert caught.value.errno == errno.EPERM
    with pytest.raises(OSError) as caught:
        os.rename(mounted / "d", mounted / "d" / "sub" / "inside")
    assert caught.value.errno == errno.EINVAL
    os.symlink("f", mounted / "link")
    assert os.readlink(mounted / "link") == "f"
    assert (mounted / "link").read_bytes() == b"data"
    os.setxattr(mounted / "f", "user.k", b"v" * 100)
    assert os.getxattr(mounted / "f", "user.k") == b"v" * 100
    assert "user.k" in os.listxattr(mounted / "f")
    with pytest.raises(OSError) as caught:  # the 2 KiB of S3 user metadata
        os.setxattr(mounted / "f", "user.big", b"v" * 1800)
    assert caught.value.errno == errno.ENOSPC
    os.removexattr(mounted / "f", "user.k")
    assert os.listxattr(mounted / "f") == []
    st_ino = os.stat(mounted / "f").st_ino
    os.chmod(mounted / "f", 0o600)
    os.chown(mounted / "f", 1234, 5678)
    st = os.stat(mounted / "f")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o600, 1234, 5678)
    assert st.st_ino == st_ino
    os.rename(mounted / "f", mounted / "d" / "g")
    assert (mounted / "d" / "g").read_bytes() == b"data"
    assert os.stat(mounted / "d" / "g").st_uid == 1234
    assert not (mounted / "f").exists()
    os.rmdir(mounted / "d" / "sub")
    os.unlink(mounted / "d" / "g")
    os.rmdir(mounted / "d")
    assert sorted(os.listdir(mounted)) == ["link"]


def test_unlinked_open_file_and_fallocate(mounted: Path) -> None:
    path = mounted / "f"
    with open(path, "w+b") as f:
        f.write(b"abc")
        f.flush()
        os.unlink(path)
        f.write(b"def")
        f.seek(0)
        assert f.read() == b"abcdef"
        # fallocate(2) itself: posix_fallocate would fall back to writing zeros.
        assert libc.fallocate(f.fileno(), 0, ctypes.c_long(0), ctypes.c_long(10)) == -1
        assert ctypes.get_errno() == errno.EOPNOTSUPP
    assert not path.exists()
    assert os.listdir(mounted) == []


def test_empty_directories_persist_and_paged_listing(
    mountpoint: Path, store_config: dict[str, Any]
) -> None:
    with objectstore_mount(mountpoint, store_config, list_page_size=7) as mounted:
        (mounted / "empty" / "nested").mkdir(parents=True)
        (mounted / "many").mkdir()
        for index in range(60):
            (mounted / "many" / f"n{index:03d}").write_bytes(b"x" * index)
        for index in range(5):
            (mounted / "many" / f"sub{index}").mkdir()
    with objectstore_mount(mountpoint, store_config, list_page_size=7) as mounted:
        assert os.listdir(mounted / "empty") == ["nested"]
        names = sorted(os.listdir(mounted / "many"))
        assert names == sorted([f"n{i:03d}" for i in range(60)] + [f"sub{i}" for i in range(5)])
        assert all(os.stat(mounted / "many" / f"n{i:03d}").st_size == i for i in range(60))
        inos = {os.stat(mounted / "many" / name).st_ino for name in names}
        assert len(inos) == len(names)


def test_rename_directory_of_1000_files(mounted: Path) -> None:
    source = mounted / "src"
    source.mkdir()
    (source / "deeper").mkdir()
    for index in range(1000):
        parent = source / "deeper" if index % 10 == 0 else source
        (parent / f"f{index:04d}").write_bytes(index.to_bytes(4, "big"))
    os.rename(source, mounted / "dst")
    assert not source.exists()
    moved = mounted / "dst"
    assert len(os.listdir(moved)) == 901  # 900 files and "deeper"
    assert len(os.listdir(moved / "deeper")) == 100
    for index in (0, 1, 555, 999):
        parent = moved / "deeper" if index % 10 == 0 else moved
        assert (parent / f"f{index:04d}").read_bytes() == index.to_bytes(4, "big")
    assert sorted(os.listdir(mounted)) == ["dst"]


def test_200_mib_file_in_parts(mounted: Path, store_config: dict[str, Any]) -> None:
    block = random.Random(3).randbytes(1 << 20)
    expected = hashlib.sha256()
    with open(mounted / "big", "wb") as f:
        for index in range(200):
            piece = index.to_bytes(4, "big") + block[4:]
            f.write(piece)
            expected.update(piece)
        os.fsync(f.fileno())
    assert os.stat(mounted / "big").st_size == 200 << 20
    if store_config["type"] == "s3":
        head = s3_client(store_config["endpoint_url"]).head_object(
            Bucket=store_config["bucket"], Key="big"
        )
        assert head["ETag"].endswith('-25"')  # 25 parts of 8 MiB
    got = hashlib.sha256()
    with open(mounted / "big", "rb") as f:
        while chunk := f.read(4 << 20):
            got.update(chunk)
    assert got.hexdigest() == expected.hexdigest()
    with open(mounted / "big", "rb") as f:  # random ranged reads
        for index in (199, 3, 100):
            f.seek(index << 20)
            assert f.read(4) == index.to_bytes(4, "big")


def test_two_mounts_of_one_bucket(
    mountpoint: Path, tmp_path: Path, store_config: dict[str, Any]
) -> None:
    other = tmp_path / "second-mount"
    other.mkdir()
    other.chmod(0o755)
    with (
        objectstore_mount(mountpoint, store_config) as first,
        objectstore_mount(other, store_config) as second,
    ):
        data = os.urandom(3 << 20)
        (first / "shared").write_bytes(data)  # closed: the whole file is in the store
        assert (second / "shared").read_bytes() == data
        (second / "dir").mkdir()
        (second / "dir" / "new").write_bytes(b"from the second mount")
        assert (first / "dir" / "new").read_bytes() == b"from the second mount"
        replacement = os.urandom(1 << 20)
        (second / "shared").write_bytes(replacement)
        assert (first / "shared").read_bytes() == replacement  # open after close: new data
        with open(second / "shared", "r+b") as f:  # not closed yet: the first sees the old
            f.write(b"unsaved")
            assert (first / "shared").read_bytes()[:7] == replacement[:7]
        assert (first / "shared").read_bytes()[:7] == b"unsaved"
        assert sorted(os.listdir(first)) == sorted(os.listdir(second)) == ["dir", "shared"]


def test_endpoint_outage_mid_write(
    mountpoint: Path, proxy: TcpProxy, bucket: str, moto_endpoint: str
) -> None:
    store = s3_store(bucket, f"http://127.0.0.1:{proxy.port}", read_timeout=2.0)
    with objectstore_mount(mountpoint, store) as mounted:
        saved = os.urandom(2 << 20)
        fd = os.open(mounted / "saved", os.O_CREAT | os.O_WRONLY)
        os.write(fd, saved)
        os.fsync(fd)  # returned 0: the data is in the store
        os.close(fd)
        fd = os.open(mounted / "pending", os.O_CREAT | os.O_WRONLY)
        os.write(fd, b"first part")
        proxy.cut()
        try:
            os.write(fd, b" written during the outage")  # staged locally: accepted
            with pytest.raises(OSError) as caught:
                os.fsync(fd)
            assert caught.value.errno == errno.EIO
            with pytest.raises(OSError) as caught:
                os.close(fd)  # close reports what could not be stored
            assert caught.value.errno == errno.EIO
            with pytest.raises(OSError):
                (mounted / "while-down").write_bytes(b"x")
            time.sleep(1.0)  # the RELEASE after close comes asynchronously: let it fail too
        finally:
            proxy.restore()
        # What was fsync'ed is there, untouched; the mount works again.
        assert (mounted / "saved").read_bytes() == saved
        direct = s3_client(moto_endpoint).get_object(Bucket=bucket, Key="saved")["Body"].read()

        assert direct == saved
        # The file whose close and release failed never reached the store, not even in part.
        client = s3_client(moto_endpoint)
        assert client.list_objects_v2(Bucket=bucket, Prefix="pending").get("KeyCount") == 0
        (mounted / "written-after").write_bytes(b"again")
        assert (mounted / "written-after").read_bytes() == b"again"
        (mounted / "after").mkdir()
        assert sorted(os.listdir(mounted)) == ["after", "saved", "written-after"]


def test_directory_rename_during_an_outage_keeps_the_source(
    mountpoint: Path, proxy: TcpProxy, bucket: str
) -> None:
    store = s3_store(bucket, f"http://127.0.0.1:{proxy.port}", read_timeout=2.0)
    with objectstore_mount(mountpoint, store) as mounted:
        (mounted / "src").mkdir()
        for index in range(5):
            (mounted / "src" / f"f{index}").write_bytes(b"%d" % index)
        proxy.cut()
        try:
            with pytest.raises(OSError) as caught:
                os.rename(mounted / "src", mounted / "dst")
            assert caught.value.errno == errno.EIO
        finally:
            proxy.restore()
        assert sorted(os.listdir(mounted / "src")) == [f"f{i}" for i in range(5)]
        os.rename(mounted / "src", mounted / "dst")
        assert [(mounted / "dst" / f"f{i}").read_bytes() for i in range(5)] == [
            b"%d" % i for i in range(5)
        ]


def test_parallel_writers_and_readers(mounted: Path) -> None:
    """Threads creating, rewriting, reading and listing at once (the session serves FUSE
    requests on several threads)."""

    def worker(index: int) -> list[str]:
        rng = random.Random(index)
        directory = mounted / f"w{index}"
        directory.mkdir()
        expected = {}
        for number in range(15):
            data = rng.randbytes(rng.choice([0, 10, 100_000, 1_500_000]))
            (directory / f"f{number}").write_bytes(data)
            expected[f"f{number}"] = data
        for name, data in expected.items():
            assert (directory / name).read_bytes() == data
        return sorted(os.listdir(directory))

    with ThreadPoolExecutor(6) as pool:
        listings = list(pool.map(worker, range(6)))
    assert all(listing == sorted(f"f{n}" for n in range(15)) for listing in listings)
    assert sorted(os.listdir(mounted)) == [f"w{index}" for index in range(6)]
