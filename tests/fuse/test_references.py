"""A failed request must not keep its buffers alive: under virtio-fs they are guest RAM, and a
mapping cannot be released while a view into it lives."""

from __future__ import annotations

import gc
import weakref

from vfsframe_plugins.memory import MemoryBackend, MemoryConfig

from vfsframe.chain import ShareChain
from vfsframe.fuse import abi
from vfsframe.session import FuseSession


class GuestBuffer(bytearray):
    """A bytearray that can be weakly referenced."""


def request(opcode: int, unique: int, nodeid: int, body: bytes) -> GuestBuffer:
    header = abi.IN_HEADER.pack(
        abi.IN_HEADER.size + len(body), opcode, unique, nodeid, 0, 0, 0, 0, 0
    )
    return GuestBuffer(header + body)


def test_an_errno_reply_leaves_no_reference_to_the_request() -> None:
    session = FuseSession(ShareChain(MemoryBackend(MemoryConfig())))
    reply = [memoryview(bytearray(4096))]
    init = request(abi.Opcode.INIT, 1, 0, abi.INIT_IN.pack(7, 31, 1 << 20, 0))
    session.handle([memoryview(init)], reply)
    gc.disable()  # what matters is that nothing waits for a collection
    try:
        buffer = request(abi.Opcode.LOOKUP, 2, abi.ROOT_ID, b"missing\0")  # ENOENT from the backend
        alive = weakref.ref(buffer)
        view = memoryview(buffer)
        assert session.handle([view], reply) == abi.OUT_HEADER.size
        view.release()
        del view, buffer
        assert alive() is None
    finally:
        gc.enable()
