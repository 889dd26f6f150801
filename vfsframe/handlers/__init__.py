"""One function per FUSE opcode: decode the request, call the share chain, encode the reply.

A handler takes a ``Call`` and returns the reply body (bytes-like), an int (that many body
bytes were already written into the reply space, as READ does), or None (no reply at all).
It raises OSError for an errno reply and ProtocolError for a malformed request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vfsframe.handlers import directories, entries, files, locks, session_ops, xattrs
from vfsframe.handlers.call import Call

HANDLERS: dict[int, Callable[[Call], Any]] = {}
for _module in (session_ops, entries, files, directories, xattrs, locks):
    HANDLERS.update(_module.HANDLERS)

__all__ = ["HANDLERS", "Call"]
