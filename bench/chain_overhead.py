"""Per-request cost of the share chain and of the whole session, in-process, in microseconds.

Run:  .venv/bin/python bench/chain_overhead.py

Measures a GETATTR through ``chain.getattr`` alone and through ``FuseSession.handle`` (decode,
node table, chain, encode) on the memory backend, with 0 and with 3 pass-through middleware.
"""

from __future__ import annotations

import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vfsframe_plugins.memory import MemoryBackend, MemoryConfig

from bench.common import fuse_request
from vfsframe import ops
from vfsframe.chain import ShareChain
from vfsframe.fuse import abi
from vfsframe.hookspecs import hookimpl
from vfsframe.session import FuseSession


class PassThrough:
    """A middleware that wraps getattr and does nothing: the chain's own cost."""

    @hookimpl(wrapper=True)
    def vfs_getattr(self, req: ops.GetattrRequest):  # type: ignore[no-untyped-def]
        return (yield)


def _request(opcode: int, unique: int, nodeid: int, body: bytes) -> list[memoryview]:
    return [memoryview(fuse_request(opcode, nodeid, body, unique=unique))]


def _per_call_us(function: object, number: int = 50_000) -> float:
    return min(timeit.repeat(function, number=number, repeat=5)) / number * 1e6  # type: ignore[arg-type]


def measure_chain_overhead() -> list[str]:
    lines = ["per-request cost of a GETATTR (memory backend, µs, best of 5):"]
    for middleware in (0, 3):
        chain = ShareChain(
            MemoryBackend(MemoryConfig()), [PassThrough() for _ in range(middleware)]
        )
        req = ops.GetattrRequest(ops.Context(), "/")
        chain_us = _per_call_us(lambda chain=chain, req=req: chain.getattr(req))
        session = FuseSession(chain)
        reply = [memoryview(bytearray(4096))]
        session.handle(
            _request(abi.Opcode.INIT, 1, 0, abi.INIT_IN.pack(7, 31, 1 << 20, 0xFFFFFFFF)), reply
        )
        getattr_request = _request(abi.Opcode.GETATTR, 2, abi.ROOT_ID, abi.GETATTR_IN.pack(0, 0, 0))
        session_us = _per_call_us(lambda s=session, r=getattr_request, out=reply: s.handle(r, out))
        lines.append(
            f"  {middleware} middleware: chain {chain_us:.2f} µs, whole session.handle {session_us:.2f} µs"
        )
    return lines


if __name__ == "__main__":
    print("\n".join(measure_chain_overhead()))
