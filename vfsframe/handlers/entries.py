"""Names and attributes: LOOKUP, FORGET, GETATTR, SETATTR and the namespace operations."""

from __future__ import annotations

import errno
import os
from typing import Any

from vfsframe import ops
from vfsframe.fuse import abi
from vfsframe.fuse.abi import Opcode
from vfsframe.fuse.wire import ProtocolError, check_name
from vfsframe.handlers.call import Call


def lookup(call: Call) -> bytes:
    parent = call.node
    raw = call.names(0, 1)[0]
    if raw in (b".", b".."):
        # Only asked for with EXPORT_SUPPORT (NFS export of the mount).
        node = parent if raw == b"." or not parent.names else parent.names[0][0]
        attr = call.session.chain.getattr(ops.GetattrRequest(call.ctx, call.path(node)))
        node.lookups += 1
        return call.entry_of(node, attr)
    name = check_name(raw)
    attr = call.session.chain.getattr(ops.GetattrRequest(call.ctx, call.child_path(parent, name)))
    return call.entry(parent, name, attr)


def forget(call: Call) -> None:
    (count,) = call.unpack(abi.FORGET_IN)
    call.session.nodes.forget(call.nodeid, count)


def batch_forget(call: Call) -> None:
    count, _ = call.unpack(abi.BATCH_FORGET_IN)
    args = call.args
    end = abi.BATCH_FORGET_IN.size + count * abi.FORGET_ONE.size
    if end > len(args):
        raise ProtocolError("BATCH_FORGET is shorter than its count")
    nodes = call.session.nodes
    for offset in range(abi.BATCH_FORGET_IN.size, end, abi.FORGET_ONE.size):
        nodeid, lookups = abi.FORGET_ONE.unpack_from(args, offset)
        nodes.forget(nodeid, lookups)


def _target(call: Call, has_fh: bool, fh: int) -> tuple[str, Any]:
    """The path and backend handle a GETATTR/SETATTR works on. fstat/fchmod/futimens of an
    unlinked open file come without a handle (no name is left): use one of its handles."""
    node = call.node
    if has_fh:
        handle = call.session.handles.file(fh)
    elif not node.names and node is not call.session.nodes.root:
        handle = call.session.handles.open_file_of(node)
    else:
        return call.path(node), None
    if handle is None:
        raise OSError(errno.ESTALE, "node has no name and no open file")
    return call.handle_path(handle.node), handle.backend_fh


def getattr_(call: Call) -> bytes:
    flags, _, fh = call.unpack(abi.GETATTR_IN)
    path, backend_fh = _target(call, bool(flags & abi.GETATTR_FH), fh)
    attr = call.session.chain.getattr(ops.GetattrRequest(call.ctx, path, backend_fh))
    return call.attr_out(attr)


def setattr_(call: Call) -> bytes:
    (valid, _, fh, size, _owner, atime, mtime, ctime, atimensec, mtimensec, ctimensec, mode, _,
     uid, gid, _) = call.unpack(abi.SETATTR_IN)  # fmt: skip
    path, backend_fh = _target(call, bool(valid & abi.FATTR_FH), fh)
    req = ops.SetattrRequest(call.ctx, path, backend_fh)
    if valid & abi.FATTR_MODE:
        req.mode = mode
    if valid & abi.FATTR_UID:
        req.uid = uid
    if valid & abi.FATTR_GID:
        req.gid = gid
    if valid & abi.FATTR_SIZE:
        req.size = size
    if valid & abi.FATTR_ATIME_NOW:
        req.atime_ns = ops.UTIME_NOW
    elif valid & abi.FATTR_ATIME:
        req.atime_ns = _time_ns(atime, atimensec)
    if valid & abi.FATTR_MTIME_NOW:
        req.mtime_ns = ops.UTIME_NOW
    elif valid & abi.FATTR_MTIME:
        req.mtime_ns = _time_ns(mtime, mtimensec)
    if valid & abi.FATTR_CTIME:
        req.ctime_ns = _time_ns(ctime, ctimensec)
    req.kill_suid = bool(valid & abi.FATTR_KILL_SUIDGID)
    return call.attr_out(call.session.chain.setattr(req))


def _time_ns(seconds: int, nanoseconds: int) -> int:
    if seconds >= 1 << 63:  # the kernel sends signed seconds in an unsigned field
        seconds -= 1 << 64
    if nanoseconds >= 1_000_000_000:
        raise ProtocolError("nanoseconds out of range")
    return seconds * 1_000_000_000 + nanoseconds


def readlink(call: Call) -> bytes:
    target = call.session.chain.readlink(ops.ReadlinkRequest(call.ctx, call.path()))
    return os.fsencode(target)


def symlink(call: Call) -> bytes:
    raw_name, raw_target = call.names(0, 2)
    name = check_name(raw_name)
    if not raw_target or len(raw_target) >= abi.PATH_MAX:
        raise ProtocolError(
            "bad symlink target", errno.ENAMETOOLONG if raw_target else errno.ENOENT
        )
    parent = call.node
    req = ops.SymlinkRequest(call.ctx, call.child_path(parent, name), os.fsdecode(raw_target))
    return call.entry(parent, name, call.session.chain.symlink(req))


def mknod(call: Call) -> bytes:
    mode, rdev, umask, _ = call.unpack(abi.MKNOD_IN)
    name = call.name(abi.MKNOD_IN.size)
    call.ctx.umask = umask
    parent = call.node
    req = ops.MknodRequest(call.ctx, call.child_path(parent, name), mode, rdev)
    return call.entry(parent, name, call.session.chain.mknod(req))


def mkdir(call: Call) -> bytes:
    mode, umask = call.unpack(abi.MKDIR_IN)
    name = call.name(abi.MKDIR_IN.size)
    call.ctx.umask = umask
    parent = call.node
    req = ops.MkdirRequest(call.ctx, call.child_path(parent, name), mode)
    return call.entry(parent, name, call.session.chain.mkdir(req))


def unlink(call: Call) -> bytes:
    name = call.name()
    parent = call.node
    call.session.chain.unlink(ops.UnlinkRequest(call.ctx, call.child_path(parent, name)))
    call.session.nodes.unlinked(parent, name)
    return b""


def rmdir(call: Call) -> bytes:
    name = call.name()
    parent = call.node
    call.session.chain.rmdir(ops.RmdirRequest(call.ctx, call.child_path(parent, name)))
    call.session.nodes.unlinked(parent, name)
    return b""


def rename(call: Call) -> bytes:
    (newdir,) = call.unpack(abi.RENAME_IN)
    return _rename(call, newdir, 0, abi.RENAME_IN.size)


def rename2(call: Call) -> bytes:
    newdir, flags, _ = call.unpack(abi.RENAME2_IN)
    return _rename(call, newdir, flags, abi.RENAME2_IN.size)


def _rename(call: Call, newdir: int, flags: int, offset: int) -> bytes:
    raw_old, raw_new = call.names(offset, 2)
    old, new = check_name(raw_old), check_name(raw_new)
    if flags & ~(ops.RENAME_NOREPLACE | ops.RENAME_EXCHANGE | ops.RENAME_WHITEOUT):
        raise OSError(errno.EINVAL, "unknown rename flags")
    nodes = call.session.nodes
    old_parent, new_parent = call.node, nodes.get(newdir)
    req = ops.RenameRequest(
        call.ctx, call.child_path(old_parent, old), call.child_path(new_parent, new), flags
    )
    call.session.chain.rename(req)
    nodes.renamed(old_parent, old, new_parent, new, bool(flags & ops.RENAME_EXCHANGE))
    return b""


def link(call: Call) -> bytes:
    (old_nodeid,) = call.unpack(abi.LINK_IN)
    name = call.name(abi.LINK_IN.size)
    parent = call.node
    old = call.session.nodes.get(old_nodeid)
    req = ops.LinkRequest(call.ctx, call.path(old), call.child_path(parent, name))
    return call.entry(parent, name, call.session.chain.link(req))


def access(call: Call) -> bytes:
    mask, _ = call.unpack(abi.ACCESS_IN)
    call.session.chain.access(ops.AccessRequest(call.ctx, call.path(), mask))
    return b""


HANDLERS: dict[int, Any] = {
    Opcode.LOOKUP: lookup,
    Opcode.FORGET: forget,
    Opcode.BATCH_FORGET: batch_forget,
    Opcode.GETATTR: getattr_,
    Opcode.SETATTR: setattr_,
    Opcode.READLINK: readlink,
    Opcode.SYMLINK: symlink,
    Opcode.MKNOD: mknod,
    Opcode.MKDIR: mkdir,
    Opcode.UNLINK: unlink,
    Opcode.RMDIR: rmdir,
    Opcode.RENAME: rename,
    Opcode.RENAME2: rename2,
    Opcode.LINK: link,
    Opcode.ACCESS: access,
}
