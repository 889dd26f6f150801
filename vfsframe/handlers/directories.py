"""Open directories: OPENDIR, READDIR, READDIRPLUS, RELEASEDIR, FSYNCDIR.

The kernel continues a listing by the offset of the last entry it consumed. The session keeps
a snapshot of the listing per open directory, so offsets are indices that stay valid however
the directory changes; reading from offset 0 again (rewinddir) takes a fresh snapshot.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Any

from vfsframe import ops
from vfsframe.fuse import abi
from vfsframe.fuse.abi import Opcode
from vfsframe.handlers.call import Call
from vfsframe.handles import OpenDirectory

_DOT_ENTRIES = 2  # "." and ".." come first, at offsets 1 and 2
_ZERO_ENTRY = bytes(abi.ENTRY_OUT.size)


def opendir(call: Call) -> bytes:
    flags, _ = call.unpack(abi.OPEN_IN)
    node = call.node
    if not stat.S_ISDIR(node.mode):
        raise OSError(errno.ENOTDIR, "not a directory")
    backend_fh = call.session.chain.opendir(ops.OpendirRequest(call.ctx, call.path(node), flags))
    fh = call.session.handles.add(OpenDirectory(node, backend_fh))
    return abi.OPEN_OUT.pack(fh, call.session.policy.opendir_flags, 0)


def _listing(call: Call, handle: OpenDirectory, offset: int) -> list[ops.DirEntry]:
    with handle.lock:
        if handle.entries is None or offset == 0:
            req = ops.ReaddirRequest(call.ctx, call.path(handle.node), handle.backend_fh)
            result = call.session.chain.readdir(req)
            handle.entries = result if isinstance(result, list) else list(result)
        return handle.entries


def _dot_entries(call: Call, handle: OpenDirectory) -> list[tuple[bytes, int, int]]:
    node = handle.node
    parent = node.names[0][0] if node.names else node
    return [(b".", node.ino, stat.S_IFDIR), (b"..", parent.ino, stat.S_IFDIR)]


def readdir(call: Call) -> bytearray:
    fh, offset, size, *_ = call.unpack(abi.READ_IN)
    size = min(size, call.reply_capacity() - abi.OUT_HEADER.size)
    handle = call.session.handles.directory(fh)
    entries = _listing(call, handle, offset)
    out = bytearray()
    index = offset
    dots = _dot_entries(call, handle)
    while True:
        if index < _DOT_ENTRIES:
            name, ino, mode = dots[index]
        elif index - _DOT_ENTRIES < len(entries):
            entry = entries[index - _DOT_ENTRIES]
            name, ino, mode = os.fsencode(entry.name), entry.ino, entry.mode
        else:
            break
        record = abi.dirent_size(len(name))
        if len(out) + record > size:
            break
        _append_dirent(out, name, ino, mode, index + 1, record)
        index += 1
    return out


def readdirplus(call: Call) -> bytearray:
    fh, offset, size, *_ = call.unpack(abi.READ_IN)
    size = min(size, call.reply_capacity() - abi.OUT_HEADER.size)
    handle = call.session.handles.directory(fh)
    entries = _listing(call, handle, offset)
    out = bytearray()
    index = offset
    dots = _dot_entries(call, handle)
    parent = handle.node
    while True:
        if index < _DOT_ENTRIES:
            name, ino, mode = dots[index]
            record = abi.ENTRY_OUT.size + abi.dirent_size(len(name))
            if len(out) + record > size:
                break
            out += _ZERO_ENTRY  # nodeid 0: the kernel links nothing for "." and ".."
            _append_dirent(out, name, ino, mode, index + 1, record - abi.ENTRY_OUT.size)
            index += 1
            continue
        if index - _DOT_ENTRIES >= len(entries):
            break
        entry = entries[index - _DOT_ENTRIES]
        name = os.fsencode(entry.name)
        record = abi.ENTRY_OUT.size + abi.dirent_size(len(name))
        if len(out) + record > size:
            break
        attr = entry.attr or _getattr_or_none(call, parent, entry.name)
        index += 1
        if attr is None:  # gone since the listing was taken
            continue
        # Counted only now that the entry is certain to be in the reply.
        out += call.entry(parent, entry.name, attr)
        _append_dirent(out, name, attr.st_ino, attr.st_mode, index, record - abi.ENTRY_OUT.size)
    return out


def _getattr_or_none(call: Call, parent: Any, name: str) -> Any:
    try:
        return call.session.chain.getattr(
            ops.GetattrRequest(call.ctx, call.child_path(parent, name))
        )
    except FileNotFoundError:
        return None


def _append_dirent(
    out: bytearray, name: bytes, ino: int, mode: int, next_offset: int, record: int
) -> None:
    start = len(out)
    out += abi.DIRENT.pack(ino, next_offset, len(name), stat.S_IFMT(mode) >> 12)
    out += name
    out += bytes(record - (len(out) - start))


def releasedir(call: Call) -> bytes:
    fh, *_ = call.unpack(abi.RELEASE_IN)
    handle = call.session.handles.directory(fh)  # EBADF, and an open file stays open
    call.session.handles.pop(fh)
    try:
        path = call.path(handle.node)
    except OSError:
        path = ""
    call.session.chain.releasedir(ops.ReleasedirRequest(call.ctx, path, handle.backend_fh))
    return b""


def fsyncdir(call: Call) -> bytes:
    fh, fsync_flags, _ = call.unpack(abi.FSYNC_IN)
    handle = call.session.handles.directory(fh)
    datasync = bool(fsync_flags & abi.FSYNC_FDATASYNC)
    req = ops.FsyncdirRequest(call.ctx, call.path(handle.node), handle.backend_fh, datasync)
    call.session.chain.fsyncdir(req)
    return b""


HANDLERS: dict[int, Any] = {
    Opcode.OPENDIR: opendir,
    Opcode.READDIR: readdir,
    Opcode.READDIRPLUS: readdirplus,
    Opcode.RELEASEDIR: releasedir,
    Opcode.FSYNCDIR: fsyncdir,
}
