"""Extended attributes: SETXATTR, GETXATTR, LISTXATTR, REMOVEXATTR.

A size of 0 asks how large the value (or name list) is; a buffer that is too small gets
ERANGE, as getxattr(2) promises its callers.
"""

from __future__ import annotations

import errno
import os
from typing import Any

from vfsframe import ops
from vfsframe.fuse import abi
from vfsframe.fuse.abi import Opcode
from vfsframe.fuse.wire import ProtocolError
from vfsframe.handlers.call import Call

XATTR_NAME_MAX = 255
XATTR_SIZE_MAX = 65536


def _xattr_name(raw: bytes) -> str:
    if not raw:
        raise ProtocolError("empty xattr name", errno.ERANGE)
    if len(raw) > XATTR_NAME_MAX:
        raise ProtocolError("xattr name too long", errno.ERANGE)
    return os.fsdecode(raw)


def setxattr(call: Call) -> bytes:
    size, flags = call.unpack(abi.SETXATTR_IN)
    offset = abi.SETXATTR_IN.size
    if call.session.flags & abi.InitFlag.SETXATTR_EXT:
        offset = abi.SETXATTR_IN_EXT.size
    name = _xattr_name(call.names(offset, 1)[0])
    value_start = offset + len(os.fsencode(name)) + 1
    value = call.args[value_start : value_start + size].tobytes()
    if len(value) != size:
        raise ProtocolError("xattr value shorter than its size")
    call.session.chain.setxattr(ops.SetxattrRequest(call.ctx, call.path(), name, value, flags))
    return b""


def _sized(call: Call, data: bytes, size: int) -> bytes:
    if size == 0:
        return abi.GETXATTR_OUT.pack(len(data), 0)
    if len(data) > size:
        raise OSError(errno.ERANGE, "buffer too small")
    return data


def getxattr(call: Call) -> bytes:
    size, _ = call.unpack(abi.GETXATTR_IN)
    name = _xattr_name(call.names(abi.GETXATTR_IN.size, 1)[0])
    value = call.session.chain.getxattr(ops.GetxattrRequest(call.ctx, call.path(), name))
    return _sized(call, bytes(value), size)


def listxattr(call: Call) -> bytes:
    size, _ = call.unpack(abi.GETXATTR_IN)
    names = call.session.chain.listxattr(ops.ListxattrRequest(call.ctx, call.path()))
    data = b"".join(os.fsencode(name) + b"\0" for name in names)
    return _sized(call, data, size)


def removexattr(call: Call) -> bytes:
    name = _xattr_name(call.names(0, 1)[0])
    call.session.chain.removexattr(ops.RemovexattrRequest(call.ctx, call.path(), name))
    return b""


HANDLERS: dict[int, Any] = {
    Opcode.SETXATTR: setxattr,
    Opcode.GETXATTR: getxattr,
    Opcode.LISTXATTR: listxattr,
    Opcode.REMOVEXATTR: removexattr,
}
