"""Moving FUSE messages in and out of scattered buffers without copying payloads.

A transport hands the session a request as a list of read-only memoryviews (one buffer read
from /dev/fuse, or the device-readable descriptors of a virtqueue chain) and a reply space
as a list of writable memoryviews (a per-worker buffer, or the guest's writable
descriptors). Headers and names are small and may be gathered; data never is.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence

from vfsframe.fuse import abi


class ProtocolError(Exception):
    """A request that does not follow the FUSE ABI; answered with ``errno``."""

    def __init__(self, message: str, code: int = errno.EINVAL) -> None:
        super().__init__(message)
        self.errno = code


def total_length(segments: Sequence[memoryview]) -> int:
    return sum(map(len, segments))


def gather(segments: Sequence[memoryview], length: int) -> memoryview:
    """The first ``length`` bytes as one memoryview: a view when they lie in the first
    segment (always so for /dev/fuse), otherwise a copy of just those bytes."""
    first = segments[0]
    if len(first) >= length:
        return first[:length]
    joined = bytearray()
    for segment in segments:
        need = length - len(joined)
        if need <= 0:
            break
        joined += segment[:need]
    return memoryview(joined)


def slice_segments(
    segments: Sequence[memoryview], start: int, length: int, total: int | None = None
) -> list[memoryview]:
    """Views covering bytes [start, start + length) of the scattered buffer. ``total``, the
    buffer's length if the caller knows it, spares summing a READ's or WRITE's 256 pages."""
    index = 0
    skipped = 0
    while index < len(segments) and start >= len(segments[index]):
        start -= len(segments[index])
        skipped += len(segments[index])
        index += 1
    rest = segments[index:]
    left = total_length(rest) if total is None else total - skipped
    if rest and left - start == length:
        # The usual WRITE: the data is all of the request after its header.
        return [rest[0][start:], *rest[1:]] if start else list(rest)
    views: list[memoryview] = []
    for segment in rest:
        take = min(len(segment) - start, length)
        views.append(segment[start : start + take])
        length -= take
        start = 0
        if length == 0:
            break
    if length:
        raise ProtocolError("buffer shorter than its declared length")
    return views


def copy_into(
    segments: Sequence[memoryview], start: int, data: bytes | bytearray | memoryview
) -> None:
    """Copy ``data`` into the scattered buffer at ``start``."""
    first = segments[0]
    end = start + len(data)
    if end <= len(first):
        first[start:end] = data
        return
    source = memoryview(data).cast("B")
    for view in slice_segments(segments, start, len(data)):
        size = len(view)
        view[:] = source[:size]
        source = source[size:]


def split_names(args: memoryview, offset: int, count: int) -> list[bytes]:
    """``count`` NUL-terminated strings starting at ``offset`` (names are small: copy)."""
    raw = args[offset:].tobytes()
    parts = raw.split(b"\0", count)
    if len(parts) <= count:
        raise ProtocolError("name is not NUL-terminated")
    return parts[:count]


def check_name(name: bytes) -> str:
    """A single path component from the kernel, refused if it could escape its directory."""
    if not name or b"/" in name or name in (b".", b".."):
        raise ProtocolError(f"invalid name {name!r}")
    if len(name) > abi.NAME_MAX:
        raise ProtocolError("name too long", errno.ENAMETOOLONG)
    return os.fsdecode(name)


_NS = 1_000_000_000
_U64 = (1 << 64) - 1


def pack_attr_fields(attr: object) -> tuple[int, ...]:
    """fuse_attr's fields, in order, from an ``ops.Attr`` or ``os.stat_result``."""
    a_ns, m_ns, c_ns = attr.st_atime_ns, attr.st_mtime_ns, attr.st_ctime_ns  # type: ignore[attr-defined]
    return (
        attr.st_ino,  # type: ignore[attr-defined]
        attr.st_size,  # type: ignore[attr-defined]
        attr.st_blocks,  # type: ignore[attr-defined]
        (a_ns // _NS) & _U64,
        (m_ns // _NS) & _U64,
        (c_ns // _NS) & _U64,
        a_ns % _NS,
        m_ns % _NS,
        c_ns % _NS,
        attr.st_mode,  # type: ignore[attr-defined]
        attr.st_nlink,  # type: ignore[attr-defined]
        attr.st_uid,  # type: ignore[attr-defined]
        attr.st_gid,  # type: ignore[attr-defined]
        attr.st_rdev & 0xFFFFFFFF,  # type: ignore[attr-defined]
        attr.st_blksize,  # type: ignore[attr-defined]
        0,
    )


def split_timeout(seconds: float) -> tuple[int, int]:
    whole = int(seconds)
    return whole, int((seconds - whole) * _NS)
