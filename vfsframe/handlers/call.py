"""One request in flight: its header fields, its argument bytes, and session helpers."""

from __future__ import annotations

import errno
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from vfsframe import ops
from vfsframe.fuse import abi
from vfsframe.fuse.wire import (
    ProtocolError,
    check_name,
    gather,
    pack_attr_fields,
    slice_segments,
    split_names,
    total_length,
)
from vfsframe.nodes import Node

if TYPE_CHECKING:
    from vfsframe.session import FuseSession

HEADER_SIZE = abi.IN_HEADER.size
OUT_HEADER_SIZE = abi.OUT_HEADER.size
# An entry reply with the out header; CREATE adds an open reply. A virtio-fs guest sizes the
# reply space for exactly what its opcode answers, so LOOKUP has no room for the open reply.
ENTRY_REPLY_SIZE = abi.OUT_HEADER.size + abi.ENTRY_OUT.size
CREATE_REPLY_SIZE = ENTRY_REPLY_SIZE + abi.OPEN_OUT.size


class Call:
    __slots__ = (
        "_args",
        "_reply_capacity",
        "args_end",
        "ctx",
        "nodeid",
        "opcode",
        "reply",
        "request",
        "request_length",
        "session",
        "unique",
    )

    def __init__(
        self,
        session: FuseSession,
        request: Sequence[memoryview],
        reply: Sequence[memoryview],
        opcode: int,
        unique: int,
        nodeid: int,
        ctx: ops.Context,
    ) -> None:
        self.session = session
        self.request = request
        self.reply = reply
        self.opcode = opcode
        self.unique = unique
        self.nodeid = nodeid
        self.ctx = ctx
        self.args_end = HEADER_SIZE
        self.request_length = HEADER_SIZE  # all of its buffers: the session sets it
        self._args: memoryview | None = None
        self._reply_capacity: int | None = None

    # -- decoding --------------------------------------------------------------------------

    @property
    def args(self) -> memoryview:
        """The argument bytes after the header (gathered once; WRITE does not use this)."""
        if self._args is None:
            self._args = gather(self.request, self.args_end)[HEADER_SIZE:]
        return self._args

    def unpack(self, layout: struct.Struct) -> tuple[Any, ...]:
        end = HEADER_SIZE + layout.size
        first = self.request[0]
        if end <= self.args_end and end <= len(first):  # the common case: one buffer
            return layout.unpack_from(first, HEADER_SIZE)
        args = self._args
        if args is None:  # gather just the struct: a WRITE's payload must not be copied
            end = min(self.args_end, end)
            args = gather(self.request, end)[HEADER_SIZE:]
        if len(args) < layout.size:
            raise ProtocolError(f"arguments of {len(args)} bytes, expected {layout.size}")
        return layout.unpack_from(args)

    def names(self, offset: int, count: int) -> list[bytes]:
        return split_names(self.args, offset, count)

    def name(self, offset: int = 0) -> str:
        return check_name(self.names(offset, 1)[0])

    # -- nodes -----------------------------------------------------------------------------

    @property
    def node(self) -> Node:
        return self.session.nodes.get(self.nodeid)

    def path(self, node: Node | None = None) -> str:
        return self.session.nodes.path(node or self.node)

    def handle_path(self, node: Node) -> str:
        """The path of an open file's node, or "" once every name of it is gone: the backend
        then works from its handle (I/O on an unlinked open file is legal)."""
        try:
            return self.session.nodes.path(node)
        except OSError:
            return ""

    def child_path(self, parent: Node, name: str) -> str:
        return self.session.nodes.child_path(parent, name)

    # -- encoding --------------------------------------------------------------------------

    def remember(self, parent: Node, name: str, attr: Any) -> Node:
        """The node of ``parent/name``, counting the lookup the kernel makes by our reply."""
        needed = CREATE_REPLY_SIZE if self.opcode == abi.Opcode.CREATE else ENTRY_REPLY_SIZE
        if self.reply_capacity() < needed:
            # Counting a lookup the kernel never receives would leak the node.
            raise ProtocolError("no room for an entry reply", errno.EIO)
        return self.session.nodes.remember(parent, name, attr.st_ino, attr.st_mode)

    def reply_capacity(self) -> int:
        """Bytes the reply space holds, header included (summed once: a READ's is 256 pages)."""
        if self._reply_capacity is None:
            self._reply_capacity = total_length(self.reply)
        return self._reply_capacity

    def reply_views(self, size: int) -> list[memoryview]:
        """Views of the first ``size`` bytes of the reply space after the header (READ data);
        ``size`` must fit."""
        if size <= 0:
            return []
        return slice_segments(self.reply, OUT_HEADER_SIZE, size, self.reply_capacity())

    def request_views(self, start: int, size: int) -> list[memoryview]:
        """Views of ``size`` request bytes from ``start`` on (WRITE data)."""
        if size <= 0:
            return []
        return slice_segments(self.request, start, size, self.request_length)

    def entry(self, parent: Node, name: str, attr: Any) -> bytes:
        """fuse_entry_out for ``parent/name``: the kernel now holds one more lookup."""
        return self.entry_of(self.remember(parent, name, attr), attr)

    def entry_of(self, node: Node, attr: Any) -> bytes:
        session = self.session
        entry_sec, entry_nsec = session.entry_timeout
        attr_sec, attr_nsec = session.attr_timeout
        return abi.ENTRY_OUT.pack(
            node.nodeid, 0, entry_sec, attr_sec, entry_nsec, attr_nsec, *pack_attr_fields(attr)
        )

    def attr_out(self, attr: Any) -> bytes:
        attr_sec, attr_nsec = self.session.attr_timeout
        return abi.ATTR_OUT.pack(attr_sec, attr_nsec, 0, *pack_attr_fields(attr))
