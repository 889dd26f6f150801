"""The FUSE session: protocol state between one kernel client and one share.

A transport calls ``handle(request, reply)`` with the bytes of one FUSE request and the space
for its reply; the session decodes it, calls the share chain with a typed request, and
encodes the answer in place. The same code serves /dev/fuse and virtio-fs.
"""

from __future__ import annotations

import collections
import errno
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from vfsframe import ops
from vfsframe.chain import ShareChain
from vfsframe.fuse import abi
from vfsframe.fuse.abi import Opcode
from vfsframe.fuse.wire import (
    ProtocolError,
    copy_into,
    gather,
    split_timeout,
    total_length,
)
from vfsframe.handlers import HANDLERS, Call
from vfsframe.handles import HandleTable, OpenDirectory
from vfsframe.nodes import NodeTable

log = logging.getLogger(__name__)

IN_HEADER = abi.IN_HEADER
IN_HEADER_SIZE = abi.IN_HEADER.size
OUT_HEADER_SIZE = abi.OUT_HEADER.size
MAX_ERRNO = 511  # fuse_dev_do_write refuses out.error <= -512
Handler = Callable[[Call], Any]
# Opcodes a backend may block on indefinitely; only these are tracked for INTERRUPT.
INTERRUPTIBLE = frozenset({Opcode.SETLKW})


@dataclass(frozen=True)
class CachePolicy:
    """How long the kernel may trust what it was told, as virtiofsd's ``cache=`` option."""

    entry_timeout: float
    attr_timeout: float
    open_flags: int
    opendir_flags: int


CACHE_POLICIES: dict[str, CachePolicy] = {
    # Every access goes to the server: coherent with other clients of the same backend.
    "none": CachePolicy(0.0, 0.0, abi.FOPEN_DIRECT_IO, 0),
    # Short timeouts; page cache dropped when a file changed (AUTO_INVAL_DATA).
    "auto": CachePolicy(1.0, 1.0, 0, 0),
    # The share is only changed through this session: keep everything.
    "always": CachePolicy(86400.0, 86400.0, abi.FOPEN_KEEP_CACHE, abi.FOPEN_CACHE_DIR),
}


@dataclass(frozen=True)
class SessionOptions:
    cache: str = "auto"
    writeback_cache: bool = False
    max_write: int = 1 << 20
    max_readahead: int = 1 << 20
    max_background: int = 64
    # Blocking lock waits (SETLKW) in progress at once; more get ENOLCK. Each holds a
    # transport thread, and a transport has a bounded number (64 per virtio queue, 64 for
    # /dev/fuse): with every thread waiting, the unlock that would release them could never
    # be served. Half the threads stay free for it.
    max_lock_waits: int = 32
    # Name of the share in log lines.
    name: str = "share"


class FuseSession:
    """Protocol state for one kernel connection: negotiation, nodes, handles, errno mapping.

    ``handle`` is thread-safe and never raises for bad input.
    """

    def __init__(self, chain: ShareChain, options: SessionOptions | None = None) -> None:
        self.chain = chain
        self.options = options or SessionOptions()
        self.policy = CACHE_POLICIES[self.options.cache]
        self.entry_timeout = split_timeout(self.policy.entry_timeout)
        self.attr_timeout = split_timeout(self.policy.attr_timeout)
        self.nodes = NodeTable()
        self.handles = HandleTable()
        self.proto_minor = 0
        self.flags = 0
        self.max_write = self.options.max_write
        self._init_lock = threading.Lock()
        # Requests that may block, by unique, so INTERRUPT can reach them.
        self._inflight: dict[int, threading.Event] = {}
        self._inflight_lock = threading.Lock()
        self._early_interrupts: collections.deque[int] = collections.deque(maxlen=64)
        self.destroyed = threading.Event()

    @property
    def initialized(self) -> bool:
        return self.proto_minor != 0

    # -- entry point -----------------------------------------------------------------------

    def handle(self, request: Sequence[memoryview], reply: Sequence[memoryview]) -> int:
        """Serve one request; return the number of reply bytes written (0: no reply)."""
        try:
            length = total_length(request)
            if length < IN_HEADER_SIZE:
                log.warning(
                    "%s: request of %d bytes is shorter than a header", self.options.name, length
                )
                return 0  # no unique to answer to
            first = request[0]
            head = first if len(first) >= IN_HEADER_SIZE else gather(request, IN_HEADER_SIZE)
            size, opcode, unique, nodeid, uid, gid, pid, extlen, _ = IN_HEADER.unpack_from(head)
        except Exception:
            log.exception("%s: unreadable request header", self.options.name)
            return 0
        try:
            if size != length:
                raise ProtocolError(f"header says {size} bytes, request has {length}")
            call = Call(self, request, reply, opcode, unique, nodeid, ops.Context(uid, gid, pid, 0))
            call.request_length = length
            call.args_end = size - extlen * 8
            if call.args_end < IN_HEADER_SIZE:
                raise ProtocolError("extension length exceeds the request")
            handler = HANDLERS.get(opcode)
            if handler is None:
                raise OSError(errno.ENOSYS, f"opcode {opcode}")
            if not self.initialized and opcode != Opcode.INIT:
                raise OSError(errno.EIO, "request before INIT")
            if opcode in INTERRUPTIBLE:
                result = self._interruptible(call, handler)
            else:
                result = handler(call)
        except OSError as exc:
            # The traceback's frames (pluggy's among them) hold the request's memoryviews in a
            # reference cycle; drop it now so guest memory is not pinned until a gc pass.
            exc.__traceback__ = None
            return self._error(reply, unique, exc.errno or errno.EIO)
        except ProtocolError as exc:
            exc.__traceback__ = None
            log.warning(
                "%s: bad request (opcode %s, unique %d): %s", self.options.name, opcode, unique, exc
            )
            return self._error(reply, unique, exc.errno)
        except Exception as exc:
            log.exception(
                "%s: %s failed (unique %d, nodeid %d); answering EIO",
                self.options.name,
                _opname(opcode),
                unique,
                nodeid,
            )
            exc.__traceback__ = None
            return self._error(reply, unique, errno.EIO)
        if result is None:
            return 0
        return self._reply(call, result)

    def _interruptible(self, call: Call, handler: Handler) -> Any:
        """Run a request that may block, so that an INTERRUPT for it can end the wait."""
        event = threading.Event()
        call.ctx.interrupt = event
        with self._inflight_lock:
            if len(self._inflight) >= self.options.max_lock_waits:
                raise OSError(errno.ENOLCK, "too many blocking lock waits at once")
            self._inflight[call.unique] = event
            if call.unique in self._early_interrupts:  # the INTERRUPT overtook its request
                event.set()
        try:
            return handler(call)
        finally:
            with self._inflight_lock:
                del self._inflight[call.unique]

    def interrupt(self, unique: int) -> None:
        """The kernel interrupted request ``unique``: wake it if it is blocked."""
        with self._inflight_lock:
            event = self._inflight.get(unique)
            if event is not None:
                event.set()
            else:
                self._early_interrupts.append(unique)

    @property
    def blocked_waits(self) -> int:
        """Requests in an interruptible wait right now."""
        return len(self._inflight)

    def abort_waits(self) -> None:
        """The connection is going away: end every blocking wait (its reply goes nowhere),
        so the threads serving them can be stopped."""
        with self._inflight_lock:
            for event in self._inflight.values():
                event.set()

    def reset(self) -> None:
        """Back to the state before INIT; release what the old connection held."""
        for handle in self.handles.drain():
            self._release_quietly(handle)
        self.nodes.clear()
        self.proto_minor = 0
        self.flags = 0

    # -- replies ---------------------------------------------------------------------------

    def _reply(self, call: Call, body: Any) -> int:
        # An int body: the handler already wrote that many bytes after the header (READ).
        size = OUT_HEADER_SIZE + (body if isinstance(body, int) else len(body))
        if size > call.reply_capacity():  # even an empty READ needs room for its header
            log.warning(
                "%s: reply of %d bytes does not fit the reply buffers", self.options.name, size
            )
            return self._error(call.reply, call.unique, errno.EIO)
        if not isinstance(body, int) and body:
            copy_into(call.reply, OUT_HEADER_SIZE, body)
        copy_into(call.reply, 0, abi.OUT_HEADER.pack(size, 0, call.unique))
        return size

    def _error(self, reply: Sequence[memoryview], unique: int, code: int) -> int:
        if total_length(reply) < OUT_HEADER_SIZE:
            return 0
        if not 0 < code <= MAX_ERRNO:
            code = errno.EIO  # Linux refuses any other error, and its caller would wait forever
        copy_into(reply, 0, abi.OUT_HEADER.pack(OUT_HEADER_SIZE, -code, unique))
        return OUT_HEADER_SIZE

    def _release_quietly(self, handle: Any) -> None:
        try:
            path = self.nodes.path(handle.node)
        except OSError:
            path = ""
        try:
            if isinstance(handle, OpenDirectory):
                self.chain.releasedir(
                    ops.ReleasedirRequest(ops.ROOT_CONTEXT, path, handle.backend_fh)
                )
            else:
                self.chain.release(ops.ReleaseRequest(ops.ROOT_CONTEXT, path, handle.backend_fh))
        except Exception as exc:
            log.debug("%s: release on reset failed: %s", self.options.name, exc)


def _opname(opcode: int) -> str:
    try:
        return Opcode(opcode).name
    except ValueError:
        return f"opcode {opcode}"
