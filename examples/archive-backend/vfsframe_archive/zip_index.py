"""Indexing a zip archive into an ArchiveTree."""

from __future__ import annotations

import errno
import os
import stat
import struct
import threading
import time
import zipfile
from typing import Any

from .readers import SliceReader, StreamReader
from .tree import ArchiveTree, member_parts

_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # signature ... file name length, extra length
_EXTENDED_TIMESTAMP = 0x5455
_UNIX = 3  # ZipInfo.create_system


def index_zip(archive: zipfile.ZipFile, fd: int, tree: ArchiveTree, log: Any) -> None:
    """Add every member of ``archive`` (whose file is open as ``fd``) to ``tree``."""
    open_lock = threading.Lock()  # ZipFile.open counts references without a lock
    for info in archive.infolist():
        try:
            parts = member_parts(info.filename)
        except ValueError as exc:
            log.warning("%s: skipped: %s", archive.filename, exc)
            continue
        # Unix modes sit in the high half of the external attributes of zips made on Unix;
        # zips made elsewhere (create_system 0: MS-DOS/Windows) get the defaults.
        unix_mode = info.external_attr >> 16 if info.create_system == _UNIX else 0
        if info.is_dir():
            mode = stat.S_IFDIR | (stat.S_IMODE(unix_mode) or 0o755)
        elif stat.S_ISLNK(unix_mode):
            mode = stat.S_IFLNK | 0o777
        else:
            mode = stat.S_IFREG | (stat.S_IMODE(unix_mode) or 0o644)
        node = tree.new_node(mode, mtime_ns=_mtime(info) * 1_000_000_000)
        if stat.S_ISLNK(mode):
            node.target = os.fsdecode(archive.read(info))
            node.size = len(os.fsencode(node.target))
        elif stat.S_ISREG(mode):
            node.size = info.file_size
            node.open_data = _data_opener(archive, info, fd, open_lock)
        tree.add("/".join(parts), node)


def _data_opener(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, fd: int, open_lock: threading.Lock
) -> Any:
    if info.flag_bits & 0x1:

        def encrypted() -> Any:
            raise OSError(errno.EACCES, f"{info.filename}: encrypted zip member")

        return encrypted
    if info.compress_type == zipfile.ZIP_STORED:
        shared = SliceReader(fd, _data_offset(fd, info), info.file_size)
        return lambda: shared

    def open_stream() -> Any:
        with open_lock:
            return archive.open(info)

    return lambda: StreamReader(open_stream, info.file_size)


def _data_offset(fd: int, info: zipfile.ZipInfo) -> int:
    """Where a stored member's bytes start: after its local header, whose name and extra
    field lengths may differ from the central directory's."""
    header = os.pread(fd, _LOCAL_HEADER.size, info.header_offset)
    fields = _LOCAL_HEADER.unpack(header) if len(header) == _LOCAL_HEADER.size else None
    if fields is None or fields[0] != b"PK\x03\x04":
        raise zipfile.BadZipFile(f"member {info.filename!r}: no local header where expected")
    name_length, extra_length = fields[-2], fields[-1]
    start = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length
    if start + info.file_size > os.fstat(fd).st_size:
        raise zipfile.BadZipFile(f"member {info.filename!r} is cut short (truncated archive)")
    return start


def _mtime(info: zipfile.ZipInfo) -> int:
    """Seconds since the epoch: the extended timestamp field (UTC) if present, else the
    DOS date and time, which zip writers record in local time."""
    extra = info.extra
    while len(extra) >= 4:
        kind, size = struct.unpack_from("<2H", extra)
        body = extra[4 : 4 + size]
        if kind == _EXTENDED_TIMESTAMP and len(body) >= 5 and body[0] & 1:
            return struct.unpack_from("<i", body, 1)[0]
        extra = extra[4 + size :]
    return int(time.mktime((*info.date_time, 0, 0, -1)))
