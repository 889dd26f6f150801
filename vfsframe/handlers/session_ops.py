"""INIT, DESTROY, INTERRUPT, STATFS, SYNCFS: the operations on the connection as a whole."""

from __future__ import annotations

import errno
import logging
from typing import Any

from vfsframe import ops
from vfsframe.fuse import abi
from vfsframe.fuse.abi import InitFlag, Opcode
from vfsframe.handlers.call import Call

log = logging.getLogger("vfsframe.session")

PAGE_SIZE = 4096

# What we ask for when the kernel offers it; locks and writeback depend on the share.
WANTED_FLAGS = (
    InitFlag.ASYNC_READ
    | InitFlag.BIG_WRITES
    | InitFlag.ATOMIC_O_TRUNC
    | InitFlag.DO_READDIRPLUS
    | InitFlag.READDIRPLUS_AUTO
    | InitFlag.PARALLEL_DIROPS
    | InitFlag.CACHE_SYMLINKS
    | InitFlag.EXPORT_SUPPORT
    | InitFlag.MAX_PAGES
    | InitFlag.DONT_MASK  # the umask reaches the backend, which applies it
    | InitFlag.AUTO_INVAL_DATA
    | InitFlag.ASYNC_DIO
)


def init(call: Call) -> bytes:
    session = call.session
    major, minor, max_readahead, flags = call.unpack(abi.INIT_IN)
    if major > abi.KERNEL_VERSION:
        # Tell the kernel our major version; it sends INIT again with that.
        return abi.INIT_OUT.pack(abi.KERNEL_VERSION, abi.MAX_MINOR, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    if major < abi.KERNEL_VERSION or minor < abi.MIN_MINOR:
        log.error(
            "%s: kernel FUSE %d.%d is older than 7.%d",
            session.options.name,
            major,
            minor,
            abi.MIN_MINOR,
        )
        raise OSError(errno.EPROTO, "protocol version too old")
    options = session.options
    wanted = int(WANTED_FLAGS)
    if options.writeback_cache:
        wanted |= InitFlag.WRITEBACK_CACHE
    if session.chain.capability("posix_locks"):
        wanted |= InitFlag.POSIX_LOCKS
    if session.chain.capability("flock_locks"):
        wanted |= InitFlag.FLOCK_LOCKS
    with session._init_lock:
        session.flags = flags & wanted
        session.proto_minor = min(minor, abi.MAX_MINOR)
        session.max_write = max(PAGE_SIZE, options.max_write)
    max_pages = (session.max_write + PAGE_SIZE - 1) // PAGE_SIZE
    log.info(
        "%s: FUSE %d.%d negotiated as 7.%d, flags %#x, max_write %d",
        options.name,
        major,
        minor,
        session.proto_minor,
        session.flags,
        session.max_write,
    )
    return abi.INIT_OUT.pack(
        abi.KERNEL_VERSION,
        session.proto_minor,
        min(max_readahead, options.max_readahead),
        session.flags,
        options.max_background,
        options.max_background * 3 // 4,
        session.max_write,
        1,  # time_gran: nanosecond timestamps
        max_pages,
        0,
        0,
        0,
    )


def destroy(call: Call) -> bytes:
    session = call.session
    try:
        session.chain.destroy(ops.DestroyRequest(call.ctx))
    finally:
        session.reset()
        session.destroyed.set()
    return b""


def interrupt(call: Call) -> None:
    # Only blocking requests (SETLKW) are woken; every other request is answered when its
    # backend call returns, which the protocol allows. INTERRUPT itself gets no reply.
    (unique,) = call.unpack(abi.INTERRUPT_IN)
    call.session.interrupt(unique)
    return None


def statfs(call: Call) -> bytes:
    st = call.session.chain.statfs(ops.StatfsRequest(call.ctx, call.path()))
    return abi.STATFS_OUT.pack(
        st.blocks, st.bfree, st.bavail, st.files, st.ffree, st.bsize, st.namelen, st.frsize
    )


def syncfs(call: Call) -> bytes:
    call.session.chain.syncfs(ops.SyncfsRequest(call.ctx))
    return b""


HANDLERS: dict[int, Any] = {
    Opcode.INIT: init,
    Opcode.DESTROY: destroy,
    Opcode.INTERRUPT: interrupt,
    Opcode.STATFS: statfs,
    Opcode.SYNCFS: syncfs,
}
