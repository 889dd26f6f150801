"""The `local` store: objects as files under a host directory; no server needed.

Layout under ``root`` (one host file per object, metadata inside it):

- key ``a/b/c`` is the file ``a.d/b.d/c.o``; the directory marker ``a/`` is ``a.d/.o``. The
  suffixes keep an object ``a`` and keys under ``a/`` apart, as S3 allows both.
- each object file starts with ``VFSO``, a 4-byte big-endian length and that many bytes of
  JSON metadata; the object's bytes follow. Data and metadata are replaced together by one
  rename, so a reader never sees one without the other.
- writes go to a temp file in the target's directory, are fsync'ed, renamed over the
  object and the directory is fsync'ed: a put that returned survives a host crash.
- ``.uploads/ID/`` holds the parts of unfinished multipart uploads.

A segment may be at most 253 bytes (its suffix makes 255, the host's limit).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO, Literal

from pydantic import Field

from .store import ListPage, ObjectInfo, ObjectReader, ObjectStore, Part, StoreConfig, StoreType

MAGIC = b"VFSO"
HEADER = struct.Struct(">4sI")
SEGMENT_MAX = 253
COPY_CHUNK = 8 << 20


class LocalStoreConfig(StoreConfig):
    """Objects kept as files under a host directory (created if missing)."""

    type: Literal["local"] = "local"
    root: Path = Field(
        description="Host directory holding the objects; created at start if missing. Two "
        "servers may share it (it is then one bucket seen by two mounts)."
    )
    fsync: bool = Field(
        True,
        description="fsync each object and its directory before a put returns (durable "
        "writes). Turn off only for scratch data.",
    )


def _error(code: int, key: str) -> OSError:
    return OSError(code, os.strerror(code), key)


class LocalReader(ObjectReader):
    """Holds the object file open: later replacements do not disturb it (the old inode
    lives on until closed), so a handle reads one version from start to end."""

    def __init__(self, fd: int, data_start: int, size: int) -> None:
        self._fd = fd
        self._start = data_start
        self.size = size

    def read_into(self, offset: int, buffers: Sequence[memoryview]) -> int:
        if offset >= self.size:
            return 0
        return os.preadv(self._fd, buffers, self._start + offset)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class LocalStore(ObjectStore):
    min_part_size = 1
    metadata_limit = 2048  # as S3, so a share moves between stores unchanged

    def __init__(self, config: LocalStoreConfig) -> None:
        self.root = Path(config.root)
        self._fsync = config.fsync
        self.host_paths = (str(self.root),)

    # -- paths ---------------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        segments = key.split("/")
        for segment in segments:
            if len(os.fsencode(segment)) > SEGMENT_MAX:
                raise _error(errno.ENAMETOOLONG, key)
        parts = [f"{segment}.d" for segment in segments[:-1]]
        return self.root.joinpath(*parts, f"{segments[-1]}.o")

    def _dir(self, prefix: str) -> Path:
        """The host directory of a prefix that ends with "/" (or is empty)."""
        segments = prefix.split("/")[:-1]
        return self.root.joinpath(*(f"{segment}.d" for segment in segments))

    def _sync_dir(self, path: Path) -> None:
        if not self._fsync:
            return
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- reading -------------------------------------------------------------------------

    @staticmethod
    def _read_header(fd: int, key: str) -> tuple[dict[str, str], int]:
        head = os.pread(fd, HEADER.size, 0)
        if len(head) < HEADER.size:
            raise _error(errno.EIO, key)
        magic, length = HEADER.unpack(head)
        if magic != MAGIC:
            raise _error(errno.EIO, key)
        metadata = json.loads(os.pread(fd, length, HEADER.size))
        return metadata, HEADER.size + length

    def _info(self, key: str, fd: int) -> tuple[ObjectInfo, int]:
        st = os.fstat(fd)
        metadata, start = self._read_header(fd, key)
        version = f"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"
        info = ObjectInfo(key, st.st_size - start, st.st_mtime_ns, version, metadata)
        return info, start

    def _open(self, key: str) -> int:
        try:
            return os.open(self._path(key), os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            raise FileNotFoundError(errno.ENOENT, "no such object", key) from None

    def check(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise OSError(errno.EACCES, f"local store root {self.root} is not writable")

    def head(self, key: str) -> ObjectInfo:
        fd = self._open(key)
        try:
            return self._info(key, fd)[0]
        finally:
            os.close(fd)

    def open_reader(self, key: str, info: ObjectInfo | None = None) -> ObjectReader:
        fd = self._open(key)
        try:
            found, start = self._info(key, fd)
        except BaseException:
            os.close(fd)
            raise
        return LocalReader(fd, start, found.size)

    # -- writing -------------------------------------------------------------------------

    def _write_object(self, key: str, fill: Any, metadata: dict[str, str]) -> ObjectInfo:
        """Temp file, header, ``fill(fd)`` for the bytes, fsync, rename, fsync the dir."""
        target = self._path(key)
        header = json.dumps(metadata, separators=(",", ":")).encode()
        for _ in range(8):  # a concurrent delete may prune the parent between the two calls
            target.parent.mkdir(parents=True, exist_ok=True)
            temp = target.parent / f".tmp-{secrets.token_hex(8)}.t"
            try:
                fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                break
            except FileNotFoundError:
                continue
        else:
            raise _error(errno.EIO, key)
        try:
            os.write(fd, HEADER.pack(MAGIC, len(header)) + header)
            fill(fd)
            if self._fsync:
                os.fsync(fd)
            os.rename(temp, target)
            self._sync_dir(target.parent)
            return self._info(key, fd)[0]
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        finally:
            os.close(fd)

    def put(self, key: str, data: bytes | BinaryIO, metadata: dict[str, str]) -> ObjectInfo:
        def fill(fd: int) -> None:
            if isinstance(data, bytes | bytearray | memoryview):
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                return
            with os.fdopen(os.dup(fd), "wb", closefd=True) as out:
                shutil.copyfileobj(data, out, COPY_CHUNK)

        return self._write_object(key, fill, metadata)

    def copy(self, source: str, target: str, metadata: dict[str, str] | None = None) -> ObjectInfo:
        fd = self._open(source)
        try:
            info, start = self._info(source, fd)

            def fill(out: int) -> None:
                offset, left = start, info.size
                while left:
                    done = os.copy_file_range(fd, out, min(left, COPY_CHUNK), offset)
                    if done == 0:
                        raise _error(errno.EIO, source)  # shrank underneath us
                    offset += done
                    left -= done

            return self._write_object(target, fill, info.metadata if metadata is None else metadata)
        finally:
            os.close(fd)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            return
        self._sync_dir(path.parent)
        # Prune directories left empty, as S3 has no empty prefixes.
        parent = path.parent
        while parent != self.root:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    # -- multipart -----------------------------------------------------------------------

    def _upload_dir(self, upload_id: str) -> Path:
        if not upload_id.isalnum():
            raise _error(errno.EINVAL, upload_id)
        return self.root / ".uploads" / upload_id

    def create_multipart(self, key: str, metadata: dict[str, str]) -> str:
        self._path(key)  # refuse an impossible key before any part is sent
        upload_id = secrets.token_hex(16)
        directory = self._upload_dir(upload_id)
        directory.mkdir(parents=True)
        (directory / "metadata.json").write_text(json.dumps({"key": key, "metadata": metadata}))
        return upload_id

    def upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> Part:
        directory = self._upload_dir(upload_id)
        if not directory.is_dir():
            raise _error(errno.ENOENT, f"upload {upload_id}")
        part = directory / f"{number:05d}"
        with open(part, "wb") as out:
            out.write(data)
            if self._fsync:
                os.fsync(out.fileno())
        return Part(number, f"{number}-{len(data)}")

    def complete_multipart(self, key: str, upload_id: str, parts: Sequence[Part]) -> ObjectInfo:
        directory = self._upload_dir(upload_id)
        recorded = json.loads((directory / "metadata.json").read_text())
        if recorded["key"] != key:
            raise _error(errno.EINVAL, key)

        def fill(out: int) -> None:
            for part in sorted(parts, key=lambda p: p.number):
                with open(directory / f"{part.number:05d}", "rb") as piece:
                    size = os.fstat(piece.fileno()).st_size
                    offset = 0
                    while offset < size:
                        done = os.copy_file_range(piece.fileno(), out, size - offset)
                        if done == 0:
                            raise _error(errno.EIO, key)
                        offset += done

        info = self._write_object(key, fill, recorded["metadata"])
        shutil.rmtree(directory, ignore_errors=True)
        return info

    def abort_multipart(self, key: str, upload_id: str) -> None:
        shutil.rmtree(self._upload_dir(upload_id), ignore_errors=True)

    # -- listing -------------------------------------------------------------------------

    def list(
        self, prefix: str, delimiter: str | None = "/", token: str | None = None, limit: int = 1000
    ) -> ListPage:
        if delimiter not in (None, "/"):
            raise _error(errno.EINVAL, f"delimiter {delimiter!r}")
        cut = prefix.rfind("/") + 1
        base, start = prefix[:cut], prefix[cut:]
        directory = self._dir(base)
        entries: list[tuple[bytes, str, bool]] = []  # (sort key, key or prefix, is prefix)
        try:
            scan = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            scan = []
        for entry in scan:
            name, kind = entry.name[:-2], entry.name[-2:]
            if not name.startswith(start):
                continue
            if kind == ".o" and entry.is_file(follow_symlinks=False):
                entries.append((os.fsencode(base + name), base + name, False))
            elif kind == ".d" and entry.is_dir(follow_symlinks=False):
                sub = base + name + "/"
                if delimiter is not None:
                    entries.append((os.fsencode(sub), sub, True))
                else:
                    entries.extend((os.fsencode(k), k, False) for k in self._walk(sub))
        entries.sort()
        if token is not None:
            after = os.fsencode(token)
            entries = [e for e in entries if e[0] > after]
        page = ListPage()
        for _, name, is_prefix in entries[:limit]:
            if is_prefix:
                if self._has_objects(name):
                    page.prefixes.append(name)
            else:
                with contextlib.suppress(FileNotFoundError):
                    info = self.head(name)
                    page.objects.append(
                        ObjectInfo(info.key, info.size, info.mtime_ns, info.version)
                    )
        if len(entries) > limit:
            page.token = entries[limit - 1][1]
        return page

    def _walk(self, prefix: str) -> list[str]:
        keys = []
        for directory, _dirs, files in os.walk(self._dir(prefix)):
            relative = Path(directory).relative_to(self._dir(prefix))
            segments = [part[:-2] for part in relative.parts]
            for name in files:
                if name.endswith(".o"):
                    keys.append(prefix + "".join(f"{s}/" for s in segments) + name[:-2])
        return keys

    def _has_objects(self, prefix: str) -> bool:
        for _directory, _dirs, files in os.walk(self._dir(prefix)):
            if any(name.endswith(".o") for name in files):
                return True
        return False


def _open(config: LocalStoreConfig) -> LocalStore:
    return LocalStore(config)


LOCAL_STORE = StoreType(
    name="local",
    config=LocalStoreConfig,
    open=_open,
    host_paths=lambda config: (str(config.root),),
    summary="Objects as files under a host directory (durable: temp file, fsync, rename).",
)
