"""A fake kernel: the client side of the FUSE protocol, for driving a ``FuseSession`` in tests.

``FakeKernel`` encodes one request per opcode with the layouts of ``vfsframe.fuse.abi``,
hands it to ``session.handle`` as read-only memoryviews cut where the test asks (as the
descriptors of a virtqueue chain cut it), offers the reply space as separate writable
buffers, checks the out header and decodes the reply body into plain dicts and tuples.

An errno reply raises ``FuseError``; a reply that breaks the protocol (length not matching,
unique not echoed, body of the wrong size) fails the test with an AssertionError.
"""

from __future__ import annotations

import errno as errno_module
import itertools
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from struct import Struct
from typing import Any

from vfsframe.fuse import abi
from vfsframe.fuse.abi import InitFlag, Opcode

# Given the length of a buffer, the offsets at which to cut it into segments.
Cutter = Callable[[int], Iterable[int]]

ALL_INIT_FLAGS = int(sum(InitFlag))
ATTR_FIELDS = (
    "ino", "size", "blocks", "atime", "mtime", "ctime", "atimensec", "mtimensec", "ctimensec",
    "mode", "nlink", "uid", "gid", "rdev", "blksize", "flags",
)  # fmt: skip
INIT_OUT_FIELDS = (
    "major", "minor", "max_readahead", "flags", "max_background", "congestion_threshold",
    "max_write", "time_gran", "max_pages", "map_alignment", "flags2", "max_stack_depth",
)  # fmt: skip
STATFS_FIELDS = ("blocks", "bfree", "bavail", "files", "ffree", "bsize", "namelen", "frsize")
SYNCFS_IN = Struct("<Q")  # padding
MAX_ERRNO = 511  # Linux refuses a reply whose error is outside -511..0 (fuse_dev_do_write)

# Fixed argument struct of each opcode and how many NUL-terminated strings follow it (-1:
# free-form payload follows, e.g. WRITE data or a SETXATTR name and value).
ARGUMENTS: dict[int, tuple[Struct | None, int]] = {
    Opcode.INIT: (abi.INIT_IN, 0),
    Opcode.DESTROY: (None, 0),
    Opcode.LOOKUP: (None, 1),
    Opcode.FORGET: (abi.FORGET_IN, 0),
    Opcode.BATCH_FORGET: (abi.BATCH_FORGET_IN, -1),
    Opcode.GETATTR: (abi.GETATTR_IN, 0),
    Opcode.SETATTR: (abi.SETATTR_IN, 0),
    Opcode.READLINK: (None, 0),
    Opcode.SYMLINK: (None, 2),
    Opcode.MKNOD: (abi.MKNOD_IN, 1),
    Opcode.MKDIR: (abi.MKDIR_IN, 1),
    Opcode.UNLINK: (None, 1),
    Opcode.RMDIR: (None, 1),
    Opcode.RENAME: (abi.RENAME_IN, 2),
    Opcode.RENAME2: (abi.RENAME2_IN, 2),
    Opcode.LINK: (abi.LINK_IN, 1),
    Opcode.OPEN: (abi.OPEN_IN, 0),
    Opcode.READ: (abi.READ_IN, 0),
    Opcode.WRITE: (abi.WRITE_IN, -1),
    Opcode.STATFS: (None, 0),
    Opcode.RELEASE: (abi.RELEASE_IN, 0),
    Opcode.FSYNC: (abi.FSYNC_IN, 0),
    Opcode.SETXATTR: (abi.SETXATTR_IN, -1),
    Opcode.GETXATTR: (abi.GETXATTR_IN, 1),
    Opcode.LISTXATTR: (abi.GETXATTR_IN, 0),
    Opcode.REMOVEXATTR: (None, 1),
    Opcode.FLUSH: (abi.FLUSH_IN, 0),
    Opcode.OPENDIR: (abi.OPEN_IN, 0),
    Opcode.READDIR: (abi.READ_IN, 0),
    Opcode.READDIRPLUS: (abi.READ_IN, 0),
    Opcode.RELEASEDIR: (abi.RELEASE_IN, 0),
    Opcode.FSYNCDIR: (abi.FSYNC_IN, 0),
    Opcode.GETLK: (abi.LK_IN, 0),
    Opcode.SETLK: (abi.LK_IN, 0),
    Opcode.SETLKW: (abi.LK_IN, 0),
    Opcode.ACCESS: (abi.ACCESS_IN, 0),
    Opcode.CREATE: (abi.CREATE_IN, 1),
    Opcode.INTERRUPT: (abi.INTERRUPT_IN, 0),
    Opcode.FALLOCATE: (abi.FALLOCATE_IN, 0),
    Opcode.LSEEK: (abi.LSEEK_IN, 0),
    Opcode.COPY_FILE_RANGE: (abi.COPY_FILE_RANGE_IN, 0),
    Opcode.SYNCFS: (SYNCFS_IN, 0),
}


class FuseError(Exception):
    """The session answered with an errno."""

    def __init__(self, code: int, opcode: int) -> None:
        name = errno_module.errorcode.get(code, "?")
        super().__init__(f"{name} ({code}) from {_opname(opcode)}")
        self.errno = code
        self.opcode = opcode


@dataclass(frozen=True)
class Reply:
    unique: int
    error: int  # 0 or a negative errno, as in fuse_out_header
    body: bytes


# -- scatter lists -------------------------------------------------------------------------


def every(step: int) -> Cutter:
    """Cut every ``step`` bytes."""
    return lambda length: range(step, length, step)


def at(*points: int) -> Cutter:
    """Cut at these offsets (those beyond the buffer are ignored)."""
    return lambda length: points


def segments(data: bytes, cutter: Cutter | None = None) -> list[memoryview]:
    """Read-only views of ``data`` cut at ``cutter``'s offsets; empty segments are kept."""
    view = memoryview(bytes(data))
    points = sorted(p for p in (cutter(len(data)) if cutter else ()) if 0 <= p <= len(data))
    edges = [0, *points, len(data)]
    return [view[start:end] for start, end in itertools.pairwise(edges)]


def reply_space(size: int, cutter: Cutter | None = None) -> list[memoryview]:
    """``size`` bytes of writable reply space, each segment its own buffer."""
    points = sorted(p for p in (cutter(size) if cutter else ()) if 0 <= p <= size)
    edges = [0, *points, size]
    return [memoryview(bytearray(end - start)) for start, end in itertools.pairwise(edges)]


def encode(
    opcode: int,
    nodeid: int = 0,
    body: bytes = b"",
    *,
    unique: int = 1,
    uid: int = 0,
    gid: int = 0,
    pid: int = 0,
    extlen: int = 0,
    length: int | None = None,
) -> bytes:
    """One request: fuse_in_header and ``body``; ``length`` overrides the header's len."""
    size = abi.IN_HEADER.size + len(body) if length is None else length
    return abi.IN_HEADER.pack(size, opcode, unique, nodeid, uid, gid, pid, extlen, 0) + body


def cstr(name: str | bytes) -> bytes:
    return (os.fsencode(name) if isinstance(name, str) else name) + b"\0"


# -- decoding ------------------------------------------------------------------------------


def _exact(body: bytes, layout: Struct, what: str) -> tuple[Any, ...]:
    assert len(body) == layout.size, f"{what}: {len(body)} bytes, expected {layout.size}"
    return layout.unpack(body)


def decode_attr(fields: Sequence[int]) -> dict[str, int]:
    return dict(zip(ATTR_FIELDS, fields, strict=True))


def _entry(fields: Sequence[int]) -> dict[str, Any]:
    nodeid, generation, entry_valid, attr_valid, entry_nsec, attr_nsec = fields[:6]
    assert entry_nsec < 1_000_000_000 and attr_nsec < 1_000_000_000
    return {
        "nodeid": nodeid,
        "generation": generation,
        "entry_valid": (entry_valid, entry_nsec),
        "attr_valid": (attr_valid, attr_nsec),
        "attr": decode_attr(fields[6:]),
    }


def decode_entry(body: bytes) -> dict[str, Any]:
    return _entry(_exact(body, abi.ENTRY_OUT, "fuse_entry_out"))


def decode_attr_out(body: bytes) -> dict[str, Any]:
    attr_valid, attr_nsec, _dummy, *attr = _exact(body, abi.ATTR_OUT, "fuse_attr_out")
    assert attr_nsec < 1_000_000_000
    return {"attr_valid": (attr_valid, attr_nsec), "attr": decode_attr(attr)}


def decode_open(body: bytes) -> dict[str, int]:
    fh, open_flags, backing_id = _exact(body, abi.OPEN_OUT, "fuse_open_out")
    return {"fh": fh, "open_flags": open_flags, "backing_id": backing_id}


def decode_write(body: bytes) -> int:
    size, _ = _exact(body, abi.WRITE_OUT, "fuse_write_out")
    return size


def decode_statfs(body: bytes) -> dict[str, int]:
    return dict(zip(STATFS_FIELDS, _exact(body, abi.STATFS_OUT, "fuse_statfs_out"), strict=True))


def decode_lk(body: bytes) -> dict[str, int]:
    start, end, type_, pid = _exact(body, abi.LK_OUT, "fuse_lk_out")
    return {"start": start, "end": end, "type": type_, "pid": pid}


def decode_getxattr_size(body: bytes) -> int:
    size, _ = _exact(body, abi.GETXATTR_OUT, "fuse_getxattr_out")
    return size


def decode_lseek(body: bytes) -> int:
    return _exact(body, abi.LSEEK_OUT, "fuse_lseek_out")[0]


def decode_init(body: bytes) -> dict[str, int]:
    return dict(zip(INIT_OUT_FIELDS, _exact(body, abi.INIT_OUT, "fuse_init_out"), strict=True))


def _dirent_at(body: bytes, offset: int) -> tuple[dict[str, Any], int]:
    """One fuse_dirent at ``offset``, checked as the kernel's parse_dirfile does, and the
    offset of the next record."""
    assert offset + abi.DIRENT.size <= len(body), "truncated fuse_dirent"
    ino, off, namelen, type_ = abi.DIRENT.unpack_from(body, offset)
    assert 0 < namelen <= 1024, f"dirent name length {namelen}"
    start = offset + abi.DIRENT.size
    end = offset + abi.dirent_size(namelen)
    assert end <= len(body), "dirent name runs past the reply"
    name = body[start : start + namelen]
    assert b"/" not in name and b"\0" not in name, f"bad dirent name {name!r}"
    assert body[start + namelen : end] == bytes(end - start - namelen), "padding not zero"
    return {"ino": ino, "off": off, "type": type_, "name": name}, end


def decode_dirents(body: bytes) -> list[dict[str, Any]]:
    entries, offset = [], 0
    while offset < len(body):
        entry, offset = _dirent_at(body, offset)
        entries.append(entry)
    return entries


def decode_direntplus(body: bytes) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    entries, offset = [], 0
    while offset < len(body):
        assert offset + abi.ENTRY_OUT.size <= len(body), "truncated fuse_direntplus"
        entry = _entry(abi.ENTRY_OUT.unpack_from(body, offset))
        dirent, offset = _dirent_at(body, offset + abi.ENTRY_OUT.size)
        entries.append((entry, dirent))
    return entries


def _opname(opcode: int) -> str:
    try:
        return Opcode(opcode).name
    except ValueError:
        return f"opcode {opcode}"


# -- the client ----------------------------------------------------------------------------


class FakeKernel:
    """Sends requests to ``session`` the way Linux's fuse module would.

    ``cuts`` and ``reply_cuts`` split every request and reply space; each call may override
    them, and may also pass ``unique``, ``caller`` (uid, gid, pid), ``extlen``, ``length`` (a
    lying header) and ``reply_size``.
    """

    def __init__(
        self,
        session: Any,
        *,
        cuts: Cutter | None = None,
        reply_cuts: Cutter | None = None,
        reply_size: int = 1 << 17,
    ) -> None:
        self.session = session
        self.cuts = cuts
        self.reply_cuts = reply_cuts
        self.reply_size = reply_size
        # Above 2**32, so that a unique truncated to 32 bits anywhere would be noticed.
        self._uniques = itertools.count(1 << 32, 2)

    # -- transport ------------------------------------------------------------------------

    def send(
        self,
        opcode: int,
        nodeid: int = 0,
        body: bytes = b"",
        *,
        unique: int | None = None,
        cuts: Cutter | None = None,
        reply_cuts: Cutter | None = None,
        reply_size: int | None = None,
        caller: tuple[int, int, int] = (0, 0, 0),
        **header: int,
    ) -> Reply | None:
        """One request from ``caller`` (uid, gid, pid); ``header`` may set ``extlen`` and
        ``length``. The reply after checking its header, or None when there was none."""
        unique = next(self._uniques) if unique is None else unique
        uid, gid, pid = caller
        data = encode(opcode, nodeid, body, unique=unique, uid=uid, gid=gid, pid=pid, **header)
        capacity = self.reply_size if reply_size is None else reply_size
        reply = reply_space(capacity, reply_cuts or self.reply_cuts)
        size = self.session.handle(segments(data, cuts or self.cuts), reply)
        assert isinstance(size, int) and 0 <= size <= capacity, f"handle returned {size}"
        if size == 0:
            return None
        out = b"".join(bytes(view) for view in reply)
        assert size >= abi.OUT_HEADER.size, f"reply of {size} bytes has no room for a header"
        length, error, echoed = abi.OUT_HEADER.unpack_from(out)
        assert length == size, f"out header says {length} bytes, handle returned {size}"
        assert echoed == unique, f"reply to unique {unique} carries unique {echoed}"
        assert -MAX_ERRNO <= error <= 0, f"error {error} is not a negative errno"
        assert not error or length == abi.OUT_HEADER.size, "an error reply carries a body"
        return Reply(echoed, error, out[abi.OUT_HEADER.size : size])

    def call(self, opcode: int, nodeid: int = 0, body: bytes = b"", **opts: Any) -> bytes:
        """Send and return the reply body; FuseError for an errno reply."""
        reply = self.send(opcode, nodeid, body, **opts)
        assert reply is not None, f"no reply to {_opname(opcode)}"
        if reply.error:
            raise FuseError(-reply.error, opcode)
        return reply.body

    def no_reply(self, opcode: int, nodeid: int = 0, body: bytes = b"", **opts: Any) -> None:
        reply = self.send(opcode, nodeid, body, **opts)
        assert reply is None, f"{_opname(opcode)} was answered: {reply}"

    def empty(self, opcode: int, nodeid: int = 0, body: bytes = b"", **opts: Any) -> None:
        """Send a request whose success reply has no body."""
        body = self.call(opcode, nodeid, body, **opts)
        assert body == b"", f"{_opname(opcode)} answered with a {len(body)}-byte body"

    # -- the connection -------------------------------------------------------------------

    def init(
        self,
        major: int = abi.KERNEL_VERSION,
        minor: int = abi.MAX_MINOR,
        max_readahead: int = 1 << 17,
        flags: int = ALL_INIT_FLAGS,
        **opts: Any,
    ) -> dict[str, int]:
        body = abi.INIT_IN.pack(major, minor, max_readahead, flags)
        if minor >= 36:  # fuse_init_in grew flags2 and unused[11]
            body += abi.INIT_IN_FLAGS2.pack(0) + bytes(44)
        return decode_init(self.call(Opcode.INIT, 0, body, **opts))

    def destroy(self, **opts: Any) -> None:
        self.empty(Opcode.DESTROY, 0, **opts)

    def interrupt(self, unique: int, **opts: Any) -> None:
        self.no_reply(Opcode.INTERRUPT, 0, abi.INTERRUPT_IN.pack(unique), **opts)

    def statfs(self, nodeid: int = abi.ROOT_ID, **opts: Any) -> dict[str, int]:
        return decode_statfs(self.call(Opcode.STATFS, nodeid, **opts))

    def syncfs(self, nodeid: int = abi.ROOT_ID, **opts: Any) -> None:
        self.empty(Opcode.SYNCFS, nodeid, SYNCFS_IN.pack(0), **opts)

    # -- names and attributes -------------------------------------------------------------

    def lookup(self, parent: int, name: str | bytes, **opts: Any) -> dict[str, Any]:
        return decode_entry(self.call(Opcode.LOOKUP, parent, cstr(name), **opts))

    def forget(self, nodeid: int, nlookup: int, **opts: Any) -> None:
        self.no_reply(Opcode.FORGET, nodeid, abi.FORGET_IN.pack(nlookup), **opts)

    def batch_forget(self, forgets: Sequence[tuple[int, int]], **opts: Any) -> None:
        body = abi.BATCH_FORGET_IN.pack(len(forgets), 0)
        body += b"".join(abi.FORGET_ONE.pack(nodeid, n) for nodeid, n in forgets)
        self.no_reply(Opcode.BATCH_FORGET, 0, body, **opts)

    def getattr(self, nodeid: int, fh: int | None = None, **opts: Any) -> dict[str, Any]:
        flags = 0 if fh is None else abi.GETATTR_FH
        body = abi.GETATTR_IN.pack(flags, 0, fh or 0)
        return decode_attr_out(self.call(Opcode.GETATTR, nodeid, body, **opts))

    def setattr(
        self,
        nodeid: int,
        *,
        fh: int | None = None,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        size: int | None = None,
        atime: tuple[int, int] | None = None,
        mtime: tuple[int, int] | None = None,
        ctime: tuple[int, int] | None = None,
        atime_now: bool = False,
        mtime_now: bool = False,
        **opts: Any,
    ) -> dict[str, Any]:
        """Times are (seconds, nanoseconds); seconds may be negative."""
        valid = 0
        for flag, value in (
            (abi.FATTR_FH, fh), (abi.FATTR_MODE, mode), (abi.FATTR_UID, uid),
            (abi.FATTR_GID, gid), (abi.FATTR_SIZE, size), (abi.FATTR_ATIME, atime),
            (abi.FATTR_MTIME, mtime), (abi.FATTR_CTIME, ctime),
        ):  # fmt: skip
            if value is not None:
                valid |= flag
        valid |= (abi.FATTR_ATIME_NOW if atime_now else 0) | (
            abi.FATTR_MTIME_NOW if mtime_now else 0
        )
        (a_s, a_ns), (m_s, m_ns), (c_s, c_ns) = atime or (0, 0), mtime or (0, 0), ctime or (0, 0)
        body = abi.SETATTR_IN.pack(
            valid, 0, fh or 0, size or 0, 0, a_s & (2**64 - 1), m_s & (2**64 - 1),
            c_s & (2**64 - 1), a_ns, m_ns, c_ns, mode or 0, 0, uid or 0, gid or 0, 0,
        )  # fmt: skip
        return decode_attr_out(self.call(Opcode.SETATTR, nodeid, body, **opts))

    def access(self, nodeid: int, mask: int, **opts: Any) -> None:
        self.empty(Opcode.ACCESS, nodeid, abi.ACCESS_IN.pack(mask, 0), **opts)

    def readlink(self, nodeid: int, **opts: Any) -> bytes:
        return self.call(Opcode.READLINK, nodeid, **opts)

    def symlink(
        self, parent: int, name: str | bytes, target: str | bytes, **opts: Any
    ) -> dict[str, Any]:
        body = cstr(name) + cstr(target)
        return decode_entry(self.call(Opcode.SYMLINK, parent, body, **opts))

    def mknod(
        self, parent: int, name: str | bytes, mode: int, rdev: int = 0, umask: int = 0, **opts: Any
    ) -> dict[str, Any]:
        body = abi.MKNOD_IN.pack(mode, rdev, umask, 0) + cstr(name)
        return decode_entry(self.call(Opcode.MKNOD, parent, body, **opts))

    def mkdir(
        self, parent: int, name: str | bytes, mode: int = 0o755, umask: int = 0, **opts: Any
    ) -> dict[str, Any]:
        body = abi.MKDIR_IN.pack(mode, umask) + cstr(name)
        return decode_entry(self.call(Opcode.MKDIR, parent, body, **opts))

    def unlink(self, parent: int, name: str | bytes, **opts: Any) -> None:
        self.empty(Opcode.UNLINK, parent, cstr(name), **opts)

    def rmdir(self, parent: int, name: str | bytes, **opts: Any) -> None:
        self.empty(Opcode.RMDIR, parent, cstr(name), **opts)

    def rename(
        self, parent: int, name: str | bytes, newparent: int, newname: str | bytes, **opts: Any
    ) -> None:
        body = abi.RENAME_IN.pack(newparent) + cstr(name) + cstr(newname)
        self.empty(Opcode.RENAME, parent, body, **opts)

    def rename2(
        self,
        parent: int,
        name: str | bytes,
        newparent: int,
        newname: str | bytes,
        flags: int,
        **opts: Any,
    ) -> None:
        body = abi.RENAME2_IN.pack(newparent, flags, 0) + cstr(name) + cstr(newname)
        self.empty(Opcode.RENAME2, parent, body, **opts)

    def link(self, nodeid: int, newparent: int, newname: str | bytes, **opts: Any) -> dict:
        body = abi.LINK_IN.pack(nodeid) + cstr(newname)
        return decode_entry(self.call(Opcode.LINK, newparent, body, **opts))

    # -- files ----------------------------------------------------------------------------

    def open(self, nodeid: int, flags: int = os.O_RDWR, **opts: Any) -> dict[str, int]:
        return decode_open(self.call(Opcode.OPEN, nodeid, abi.OPEN_IN.pack(flags, 0), **opts))

    def create(
        self,
        parent: int,
        name: str | bytes,
        mode: int = 0o644,
        flags: int = os.O_RDWR | os.O_CREAT,
        umask: int = 0,
        **opts: Any,
    ) -> tuple[dict[str, Any], dict[str, int]]:
        body = abi.CREATE_IN.pack(flags, mode, umask, 0) + cstr(name)
        reply = self.call(Opcode.CREATE, parent, body, **opts)
        split = abi.ENTRY_OUT.size
        assert len(reply) == split + abi.OPEN_OUT.size, f"CREATE reply of {len(reply)} bytes"
        return decode_entry(reply[:split]), decode_open(reply[split:])

    def read(
        self, nodeid: int, fh: int, offset: int, size: int, flags: int = 0, **opts: Any
    ) -> bytes:
        body = abi.READ_IN.pack(fh, offset, size, 0, 0, flags, 0)
        data = self.call(Opcode.READ, nodeid, body, **opts)
        assert len(data) <= size, f"READ of {size} bytes answered with {len(data)}"
        return data

    def write(
        self,
        nodeid: int,
        fh: int,
        offset: int,
        data: bytes,
        *,
        size: int | None = None,
        write_flags: int = 0,
        flags: int = 0,
        **opts: Any,
    ) -> int:
        """``size`` overrides the size field (a request that lies about its payload)."""
        declared = len(data) if size is None else size
        body = abi.WRITE_IN.pack(fh, offset, declared, write_flags, 0, flags, 0) + data
        return decode_write(self.call(Opcode.WRITE, nodeid, body, **opts))

    def flush(self, nodeid: int, fh: int, lock_owner: int = 0, **opts: Any) -> None:
        self.empty(Opcode.FLUSH, nodeid, abi.FLUSH_IN.pack(fh, 0, 0, lock_owner), **opts)

    def release(
        self,
        nodeid: int,
        fh: int,
        flags: int = 0,
        release_flags: int = 0,
        lock_owner: int = 0,
        **opts: Any,
    ) -> None:
        body = abi.RELEASE_IN.pack(fh, flags, release_flags, lock_owner)
        self.empty(Opcode.RELEASE, nodeid, body, **opts)

    def fsync(self, nodeid: int, fh: int, datasync: bool = False, **opts: Any) -> None:
        body = abi.FSYNC_IN.pack(fh, abi.FSYNC_FDATASYNC if datasync else 0, 0)
        self.empty(Opcode.FSYNC, nodeid, body, **opts)

    def fallocate(
        self, nodeid: int, fh: int, offset: int, length: int, mode: int = 0, **opts: Any
    ) -> None:
        body = abi.FALLOCATE_IN.pack(fh, offset, length, mode, 0)
        self.empty(Opcode.FALLOCATE, nodeid, body, **opts)

    def lseek(self, nodeid: int, fh: int, offset: int, whence: int, **opts: Any) -> int:
        body = abi.LSEEK_IN.pack(fh, offset, whence, 0)
        return decode_lseek(self.call(Opcode.LSEEK, nodeid, body, **opts))

    def copy_file_range(
        self,
        nodeid_in: int,
        fh_in: int,
        off_in: int,
        nodeid_out: int,
        fh_out: int,
        off_out: int,
        length: int,
        flags: int = 0,
        **opts: Any,
    ) -> int:
        body = abi.COPY_FILE_RANGE_IN.pack(
            fh_in, off_in, nodeid_out, fh_out, off_out, length, flags
        )
        return decode_write(self.call(Opcode.COPY_FILE_RANGE, nodeid_in, body, **opts))

    # -- locks ----------------------------------------------------------------------------

    @staticmethod
    def _lk(fh: int, owner: int, start: int, end: int, type_: int, pid: int, flock: bool) -> bytes:
        return abi.LK_IN.pack(fh, owner, start, end, type_, pid, abi.LK_FLOCK if flock else 0, 0)

    def getlk(
        self,
        nodeid: int,
        fh: int,
        owner: int,
        start: int,
        end: int,
        type_: int,
        pid: int = 0,
        **opts: Any,
    ) -> dict[str, int]:
        body = self._lk(fh, owner, start, end, type_, pid, False)
        return decode_lk(self.call(Opcode.GETLK, nodeid, body, **opts))

    def setlk(
        self,
        nodeid: int,
        fh: int,
        owner: int,
        start: int,
        end: int,
        type_: int,
        pid: int = 0,
        *,
        wait: bool = False,
        flock: bool = False,
        **opts: Any,
    ) -> None:
        body = self._lk(fh, owner, start, end, type_, pid, flock)
        self.empty(Opcode.SETLKW if wait else Opcode.SETLK, nodeid, body, **opts)

    def setlkw(self, *args: Any, **opts: Any) -> None:
        self.setlk(*args, wait=True, **opts)

    # -- extended attributes --------------------------------------------------------------

    def setxattr(
        self, nodeid: int, name: str | bytes, value: bytes, flags: int = 0, **opts: Any
    ) -> None:
        body = abi.SETXATTR_IN.pack(len(value), flags) + cstr(name) + value
        self.empty(Opcode.SETXATTR, nodeid, body, **opts)

    def getxattr(self, nodeid: int, name: str | bytes, size: int, **opts: Any) -> bytes | int:
        """The value, or with ``size`` 0 the value's length (the size probe)."""
        body = abi.GETXATTR_IN.pack(size, 0) + cstr(name)
        reply = self.call(Opcode.GETXATTR, nodeid, body, **opts)
        if size == 0:
            return decode_getxattr_size(reply)
        assert len(reply) <= size, f"GETXATTR of {size} bytes answered with {len(reply)}"
        return reply

    def listxattr(self, nodeid: int, size: int, **opts: Any) -> list[bytes] | int:
        """The names, or with ``size`` 0 the length of the name list."""
        reply = self.call(Opcode.LISTXATTR, nodeid, abi.GETXATTR_IN.pack(size, 0), **opts)
        if size == 0:
            return decode_getxattr_size(reply)
        assert len(reply) <= size and (not reply or reply.endswith(b"\0")), reply
        return reply.split(b"\0")[:-1]

    def removexattr(self, nodeid: int, name: str | bytes, **opts: Any) -> None:
        self.empty(Opcode.REMOVEXATTR, nodeid, cstr(name), **opts)

    # -- directories ----------------------------------------------------------------------

    def opendir(self, nodeid: int, flags: int = os.O_RDONLY, **opts: Any) -> dict[str, int]:
        body = abi.OPEN_IN.pack(flags, 0)
        return decode_open(self.call(Opcode.OPENDIR, nodeid, body, **opts))

    def readdir(
        self, nodeid: int, fh: int, offset: int = 0, size: int = 4096, **opts: Any
    ) -> list[dict[str, Any]]:
        body = abi.READ_IN.pack(fh, offset, size, 0, 0, 0, 0)
        reply = self.call(Opcode.READDIR, nodeid, body, **opts)
        assert len(reply) <= size, f"READDIR of {size} bytes answered with {len(reply)}"
        return decode_dirents(reply)

    def readdirplus(
        self, nodeid: int, fh: int, offset: int = 0, size: int = 4096, **opts: Any
    ) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        body = abi.READ_IN.pack(fh, offset, size, 0, 0, 0, 0)
        reply = self.call(Opcode.READDIRPLUS, nodeid, body, **opts)
        assert len(reply) <= size, f"READDIRPLUS of {size} bytes answered with {len(reply)}"
        return decode_direntplus(reply)

    def releasedir(self, nodeid: int, fh: int, **opts: Any) -> None:
        self.empty(Opcode.RELEASEDIR, nodeid, abi.RELEASE_IN.pack(fh, 0, 0, 0), **opts)

    def fsyncdir(self, nodeid: int, fh: int, datasync: bool = False, **opts: Any) -> None:
        body = abi.FSYNC_IN.pack(fh, abi.FSYNC_FDATASYNC if datasync else 0, 0)
        self.empty(Opcode.FSYNCDIR, nodeid, body, **opts)

    # -- conveniences ---------------------------------------------------------------------

    def write_file(self, parent: int, name: str, data: bytes) -> dict[str, Any]:
        """Create ``name`` holding ``data``; its entry (the handle is released)."""
        entry, opened = self.create(parent, name)
        if data:
            assert self.write(entry["nodeid"], opened["fh"], 0, data) == len(data)
        self.release(entry["nodeid"], opened["fh"])
        return entry

    def list_names(self, nodeid: int) -> list[bytes]:
        """Every name in a directory, "." and ".." included, by one OPENDIR/READDIR pass."""
        fh = self.opendir(nodeid)["fh"]
        names, offset = [], 0
        while entries := self.readdir(nodeid, fh, offset):
            names += [entry["name"] for entry in entries]
            offset = entries[-1]["off"]
        self.releasedir(nodeid, fh)
        return names
