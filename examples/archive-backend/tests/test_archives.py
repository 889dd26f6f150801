"""What the kit's generic checks do not cover: bad archives, unsafe names, special members,
how members are read (in place or streamed) and that a large compressed member is read with
bounded memory."""

from __future__ import annotations

import errno
import io
import os
import stat
import struct
import tarfile
import time
import tracemalloc
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from vfsframe_archive import ArchiveBackend, ArchiveConfig
from vfsframe_archive.readers import SliceReader, StreamReader

from vfsframe.chain import ShareChain
from vfsframe.config import validate_config
from vfsframe.config.loader import ConfigError
from vfsframe.testing.conformance import ChainDriver, File, Seed
from vfsframe.testing.conformance.drivers import read_file

from .archives import make_tar, make_zip


@pytest.fixture
def serve() -> Iterator:
    chains: list[ShareChain] = []

    def open_archive(path: Path, **options: object) -> ChainDriver:
        chain = ShareChain(ArchiveBackend(ArchiveConfig(path=path, **options)))
        chains.append(chain)
        return ChainDriver(chain)

    yield open_archive
    for chain in chains:
        chain.close()


def add_member(tar: tarfile.TarFile, name: str, data: bytes = b"", **fields: object) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in fields.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data) if data else None)


def test_config_refuses_a_missing_archive(tmp_path: Path) -> None:
    document = {
        "share": [{"tag": "a", "backend": {"type": "archive", "path": str(tmp_path / "x")}}]
    }
    with pytest.raises(ConfigError) as exc:
        validate_config(document, "bad.toml")
    assert exc.value.problems == [f"share[0].backend.path: {tmp_path / 'x'} does not exist"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"just some text, not an archive\n" * 40, "is not a readable tar archive"),
        (b"PK\x03\x04" + bytes(100), "is not a readable zip archive"),
        (b"\x1f\x8b\x08\x00" + bytes(30), "archive"),
    ],
    ids=["text", "zip-header-only", "gzip-garbage"],
)
def test_a_file_that_is_not_an_archive_is_refused(
    tmp_path: Path, serve, content: bytes, message: str
) -> None:
    path = tmp_path / "bad"
    path.write_bytes(content)
    with pytest.raises(OSError) as exc:
        serve(path)
    assert message in str(exc.value)
    assert str(path) in str(exc.value)


@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_a_truncated_archive_is_refused(tmp_path: Path, serve, kind: str) -> None:
    seed = Seed({"a": File(os.urandom(100_000)), "b": File(os.urandom(100_000))})
    whole = tmp_path / f"whole.{kind}"
    make_tar(seed, whole) if kind == "tar" else make_zip(seed, whole, zipfile.ZIP_STORED)
    cut = tmp_path / f"cut.{kind}"
    cut.write_bytes(whole.read_bytes()[:150_000])
    with pytest.raises(OSError) as exc:
        serve(cut)
    assert exc.value.errno == errno.EINVAL, exc.value
    assert f"not a readable {kind} archive" in str(exc.value)


def test_names_leaving_the_root_are_skipped(tmp_path: Path, serve) -> None:
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as tar:
        add_member(tar, "../escape", b"x")
        add_member(tar, "ok/../../escape2", b"x")
        add_member(tar, "/absolute/file", b"abs")
        add_member(tar, "./dot/file", b"dot")
    fs = serve(path)
    assert sorted(fs.listdir("")) == ["absolute", "dot"]
    assert read_file(fs, "absolute/file") == b"abs"


def test_special_members_and_implied_directories(tmp_path: Path, serve) -> None:
    path = tmp_path / "special.tar"
    with tarfile.open(path, "w") as tar:
        add_member(tar, "dev/null", type=tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666)
        add_member(tar, "dev/fifo", type=tarfile.FIFOTYPE, mode=0o600)
        add_member(tar, "a/b/c/file", b"deep", mode=0o600, uid=1000, gid=100, mtime=1234567890)
    fs = serve(path, dir_mode=0o700)
    null = fs.lstat("dev/null")
    assert stat.S_ISCHR(null.st_mode) and null.st_rdev == os.makedev(1, 3)
    assert stat.S_ISFIFO(fs.lstat("dev/fifo").st_mode)
    implied = fs.lstat("a/b")
    assert stat.S_ISDIR(implied.st_mode) and stat.S_IMODE(implied.st_mode) == 0o700
    deep = fs.lstat("a/b/c/file")
    assert (deep.st_uid, deep.st_gid, deep.st_mtime_ns) == (1000, 100, 1234567890 * 10**9)
    assert fs.lstat("").st_nlink == 4  # ".", "..", and the ".." of "dev" and "a"
    with pytest.raises(OSError) as exc:
        fs.open("dev/fifo", os.O_RDONLY)
    assert exc.value.errno == errno.ENXIO


def test_a_later_member_replaces_an_earlier_one(tmp_path: Path, serve) -> None:
    path = tmp_path / "appended.tar"
    with tarfile.open(path, "w") as tar:
        add_member(tar, "f", b"first")
        add_member(tar, "f", b"second version")
    assert read_file(serve(path), "f") == b"second version"


@pytest.mark.parametrize(
    ("name", "reader"),
    [
        ("plain.tar", SliceReader),
        ("plain.tar.gz", StreamReader),
        ("plain.tar.bz2", StreamReader),
        ("stored.zip", SliceReader),
        ("deflated.zip", StreamReader),
    ],
)
def test_members_are_read_in_place_where_the_format_allows(
    tmp_path: Path, serve, name: str, reader: type
) -> None:
    seed = Seed({"f": File(b"payload" * 1000)})
    path = tmp_path / name
    if name.endswith("zip"):
        make_zip(seed, path, zipfile.ZIP_STORED if "stored" in name else zipfile.ZIP_DEFLATED)
    else:
        make_tar(seed, path, name.removeprefix("plain.tar").removeprefix("."))
    fs = serve(path)
    handle = fs.open("f", os.O_RDONLY)
    try:
        assert isinstance(handle.fh, reader)
        assert fs.pread(handle, 7, 7000 - 7) == b"payload"
    finally:
        fs.close(handle)


def test_a_large_compressed_member_is_read_with_bounded_memory(tmp_path: Path, serve) -> None:
    path = tmp_path / "big.tar.xz"
    size = 64 << 20
    with tarfile.open(path, "w:xz") as tar:
        info = tarfile.TarInfo("big")
        info.size = size
        tar.addfile(info, io.BytesIO(b"\x5a" * size))  # compresses to a few KiB
        add_member(tar, "after", b"the member after it")
    fs = serve(path)
    tracemalloc.start()
    try:
        handle = fs.open("big", os.O_RDONLY)
        assert fs.pread(handle, 4, size - 4) == b"ZZZZ"  # the last bytes, from the start
        fs.close(handle)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"peak {peak >> 20} MiB for a {size >> 20} MiB member"
    assert read_file(fs, "after") == b"the member after it"


def test_every_change_is_refused_with_erofs(tmp_path: Path, serve) -> None:
    fs = serve(make_tar(Seed({"f": File(b"x")}), tmp_path / "a.tar"))
    with pytest.raises(OSError) as exc:
        fs.open("f", os.O_RDONLY | os.O_TRUNC)
    assert exc.value.errno == errno.EROFS


def test_zip_times_come_from_the_extended_timestamp_when_present(tmp_path: Path, serve) -> None:
    path = tmp_path / "ut.zip"
    with zipfile.ZipFile(path, "w") as out:
        info = zipfile.ZipInfo("odd-second", (2001, 2, 3, 4, 5, 6))
        info.external_attr = (stat.S_IFREG | 0o600) << 16
        # Info-ZIP's "UT" field: flags (mtime present), then mtime as UTC seconds.
        info.extra = struct.pack("<2HBi", 0x5455, 5, 1, 1_234_567_891)
        out.writestr(info, b"x")
        plain = zipfile.ZipInfo("dos-time", (2001, 2, 3, 4, 5, 6))
        plain.create_system = 0  # made on Windows: no Unix mode
        out.writestr(plain, b"y")
    fs = serve(path)
    assert fs.lstat("odd-second").st_mtime_ns == 1_234_567_891 * 10**9  # odd: not DOS time
    assert stat.S_IMODE(fs.lstat("odd-second").st_mode) == 0o600
    local = time.mktime((2001, 2, 3, 4, 5, 6, 0, 0, -1))
    assert fs.lstat("dos-time").st_mtime_ns == int(local) * 10**9
    assert stat.S_IMODE(fs.lstat("dos-time").st_mode) == 0o644  # the default
