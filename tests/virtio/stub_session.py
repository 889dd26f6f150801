"""A stub FUSE session for the device tests: it follows the session contract, nothing more."""

from __future__ import annotations

import struct
import threading
from collections.abc import Sequence

IN_HEADER = struct.Struct("<IIQQIIII")  # len, opcode, unique, nodeid, uid, gid, pid, pad
OUT_HEADER = struct.Struct("<IiQ")
OP_FORGET = 2
OP_SLOW = 4000  # test-only opcode: blocks until the test releases it


def in_request(opcode: int, unique: int, body: bytes = b"") -> bytes:
    return IN_HEADER.pack(IN_HEADER.size + len(body), opcode, unique, 1, 0, 0, 0, 0) + body


class StubSession:
    """Answers every request with its body reversed; FORGET gets no reply; OP_SLOW waits.

    Follows the session contract: scatter lists in, bytes written out, 0 when no reply fits.
    """

    def __init__(self) -> None:
        self.requests: list[tuple[int, int, bytes]] = []
        self.resets = 0
        self.release_slow = threading.Event()
        self.slow_started = threading.Semaphore(0)
        self._lock = threading.Lock()

    def handle(self, request: Sequence[memoryview], reply: Sequence[memoryview]) -> int:
        data = b"".join(bytes(v) for v in request)
        _, opcode, unique, *_ = IN_HEADER.unpack_from(data)
        body = data[IN_HEADER.size :]
        with self._lock:
            self.requests.append((opcode, unique, body))
        if opcode == OP_FORGET:
            return 0
        if opcode == OP_SLOW:
            self.slow_started.release()
            self.release_slow.wait(30)
        out = OUT_HEADER.pack(OUT_HEADER.size + len(body), 0, unique) + body[::-1]
        if sum(len(v) for v in reply) < len(out):
            return 0
        done = 0
        for v in reply:
            n = min(len(v), len(out) - done)
            v[:n] = out[done : done + n]
            done += n
        return done

    def abort_waits(self) -> None:
        self.release_slow.set()

    def reset(self) -> None:
        self.resets += 1
