"""File locks: GETLK, SETLK, SETLKW (POSIX record locks, or flock(2) with FUSE_LK_FLOCK)."""

from __future__ import annotations

from typing import Any

from vfsframe import ops
from vfsframe.fuse import abi
from vfsframe.fuse.abi import Opcode
from vfsframe.handlers.call import Call


def _decode(call: Call) -> tuple[Any, int, ops.Lock, bool]:
    fh, owner, start, end, type_, pid, lk_flags, _ = call.unpack(abi.LK_IN)
    handle = call.session.handles.file(fh)
    return handle, owner, ops.Lock(start, end, type_, pid), bool(lk_flags & abi.LK_FLOCK)


def getlk(call: Call) -> bytes:
    handle, owner, lock, _ = _decode(call)
    req = ops.GetlkRequest(call.ctx, call.handle_path(handle.node), handle.backend_fh, owner, lock)
    found = call.session.chain.getlk(req)
    return abi.LK_OUT.pack(found.start, found.end, found.type, found.pid)


def _setlk(call: Call, wait: bool) -> bytes:
    handle, owner, lock, flock = _decode(call)
    req = ops.SetlkRequest(
        call.ctx, call.handle_path(handle.node), handle.backend_fh, owner, lock, wait, flock
    )
    call.session.chain.setlk(req)
    return b""


def setlk(call: Call) -> bytes:
    return _setlk(call, wait=False)


def setlkw(call: Call) -> bytes:
    return _setlk(call, wait=True)


HANDLERS: dict[int, Any] = {
    Opcode.GETLK: getlk,
    Opcode.SETLK: setlk,
    Opcode.SETLKW: setlkw,
}
