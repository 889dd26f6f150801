"""Open files: OPEN, CREATE, READ, WRITE and the calls on an open handle."""

from __future__ import annotations

import contextlib
import errno
import os
from typing import Any

from vfsframe import ops
from vfsframe.fuse import abi
from vfsframe.fuse.abi import Opcode
from vfsframe.fuse.wire import ProtocolError, copy_into
from vfsframe.handlers.call import OUT_HEADER_SIZE, Call
from vfsframe.handles import OpenFile

WRITE_DATA_OFFSET = abi.IN_HEADER.size + abi.WRITE_IN.size


def _open_out(call: Call, fh: int) -> bytes:
    return abi.OPEN_OUT.pack(fh, call.session.policy.open_flags, 0)


def _backend_flags(call: Call, flags: int) -> int:
    """With the writeback cache the kernel writes pages back at their own offsets and reads
    partial pages through any handle: a backend must see neither O_APPEND nor O_WRONLY."""
    if call.session.flags & abi.InitFlag.WRITEBACK_CACHE:
        flags &= ~os.O_APPEND
        if flags & os.O_ACCMODE == os.O_WRONLY:
            flags = (flags & ~os.O_ACCMODE) | os.O_RDWR
    return flags


def open_(call: Call) -> bytes:
    flags, _ = call.unpack(abi.OPEN_IN)
    flags = _backend_flags(call, flags)
    node = call.node
    backend_fh = call.session.chain.open(ops.OpenRequest(call.ctx, call.path(node), flags))
    fh = call.session.handles.add(OpenFile(node, backend_fh, flags))
    return _open_out(call, fh)


def create(call: Call) -> bytes:
    flags, mode, umask, _ = call.unpack(abi.CREATE_IN)
    flags = _backend_flags(call, flags)
    name = call.name(abi.CREATE_IN.size)
    call.ctx.umask = umask
    parent = call.node
    req = ops.CreateRequest(call.ctx, call.child_path(parent, name), flags, mode)
    backend_fh, attr = call.session.chain.create(req)
    node = call.remember(parent, name, attr)
    fh = call.session.handles.add(OpenFile(node, backend_fh, flags))
    return call.entry_of(node, attr) + _open_out(call, fh)


def read(call: Call) -> int:
    fh, offset, size, _read_flags, _owner, flags, _ = call.unpack(abi.READ_IN)
    handle = call.session.handles.file(fh)
    size = max(0, min(size, call.reply_capacity() - OUT_HEADER_SIZE))
    buffers = call.reply_views(size)
    req = ops.ReadRequest(
        call.ctx, call.handle_path(handle.node), handle.backend_fh, offset, size, buffers, flags
    )
    result = call.session.chain.read(req)
    if isinstance(result, int):
        if not 0 <= result <= size:
            raise OSError(errno.EIO, f"backend claims to have read {result} of {size} bytes")
        return result
    length = len(result)
    if length > size:
        raise OSError(errno.EIO, f"backend returned {length} bytes for a read of {size}")
    if length:
        copy_into(call.reply, OUT_HEADER_SIZE, result)
    return length


def write(call: Call) -> bytes:
    fh, offset, size, write_flags, _owner, flags, _ = call.unpack(abi.WRITE_IN)
    if WRITE_DATA_OFFSET + size != call.args_end:
        raise ProtocolError(f"WRITE of {size} bytes in a request of {call.args_end}")
    handle = call.session.handles.file(fh)
    data = call.request_views(WRITE_DATA_OFFSET, size)
    req = ops.WriteRequest(
        call.ctx,
        call.handle_path(handle.node),
        handle.backend_fh,
        offset,
        data,
        size,
        flags,
        write_flags,
    )
    written = call.session.chain.write(req)
    if not 0 <= written <= size:
        raise OSError(errno.EIO, f"backend claims to have written {written} of {size} bytes")
    return abi.WRITE_OUT.pack(written, 0)


def flush(call: Call) -> bytes:
    fh, _, _, owner = call.unpack(abi.FLUSH_IN)
    handle = call.session.handles.file(fh)
    call.session.chain.flush(
        ops.FlushRequest(call.ctx, call.handle_path(handle.node), handle.backend_fh, owner)
    )
    return b""


def release(call: Call) -> bytes:
    fh, flags, release_flags, owner = call.unpack(abi.RELEASE_IN)
    handle = call.session.handles.file(fh)  # EBADF, and an open directory stays open
    call.session.handles.pop(fh)
    path = call.handle_path(handle.node)
    if release_flags & abi.RELEASE_FLOCK_UNLOCK:
        unlock = ops.Lock(0, (1 << 63) - 1, 2, call.ctx.pid)  # F_UNLCK
        _quiet(call, ops.SetlkRequest(call.ctx, path, handle.backend_fh, owner, unlock, flock=True))
    call.session.chain.release(ops.ReleaseRequest(call.ctx, path, handle.backend_fh, flags))
    return b""


def _quiet(call: Call, req: ops.SetlkRequest) -> None:
    with contextlib.suppress(OSError):
        call.session.chain.setlk(req)


def fsync(call: Call) -> bytes:
    fh, fsync_flags, _ = call.unpack(abi.FSYNC_IN)
    handle = call.session.handles.file(fh)
    datasync = bool(fsync_flags & abi.FSYNC_FDATASYNC)
    req = ops.FsyncRequest(call.ctx, call.handle_path(handle.node), handle.backend_fh, datasync)
    call.session.chain.fsync(req)
    return b""


def fallocate(call: Call) -> bytes:
    fh, offset, length, mode, _ = call.unpack(abi.FALLOCATE_IN)
    handle = call.session.handles.file(fh)
    req = ops.FallocateRequest(
        call.ctx, call.handle_path(handle.node), handle.backend_fh, mode, offset, length
    )
    call.session.chain.fallocate(req)
    return b""


def lseek(call: Call) -> bytes:
    fh, offset, whence, _ = call.unpack(abi.LSEEK_IN)
    if whence not in (os.SEEK_DATA, os.SEEK_HOLE):
        raise OSError(errno.EINVAL, "only SEEK_DATA and SEEK_HOLE reach the server")
    handle = call.session.handles.file(fh)
    req = ops.LseekRequest(
        call.ctx, call.handle_path(handle.node), handle.backend_fh, offset, whence
    )
    return abi.LSEEK_OUT.pack(call.session.chain.lseek(req))


def copy_file_range(call: Call) -> bytes:
    fh_in, off_in, nodeid_out, fh_out, off_out, length, flags = call.unpack(abi.COPY_FILE_RANGE_IN)
    handles = call.session.handles
    source, target = handles.file(fh_in), handles.file(fh_out)
    if target.node.nodeid != nodeid_out:
        raise ProtocolError("copy_file_range target handle does not belong to its node")
    req = ops.CopyFileRangeRequest(
        call.ctx,
        call.handle_path(source.node),
        source.backend_fh,
        off_in,
        call.handle_path(target.node),
        target.backend_fh,
        off_out,
        length,
        flags,
    )
    copied = call.session.chain.copy_file_range(req)
    return abi.WRITE_OUT.pack(min(copied, 0xFFFFFFFF), 0)


HANDLERS: dict[int, Any] = {
    Opcode.OPEN: open_,
    Opcode.CREATE: create,
    Opcode.READ: read,
    Opcode.WRITE: write,
    Opcode.FLUSH: flush,
    Opcode.RELEASE: release,
    Opcode.FSYNC: fsync,
    Opcode.FALLOCATE: fallocate,
    Opcode.LSEEK: lseek,
    Opcode.COPY_FILE_RANGE: copy_file_range,
}
