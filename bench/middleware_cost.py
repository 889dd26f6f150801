"""Per-request cost of each built-in middleware on the memory backend, in microseconds.

Run:  .venv/bin/python bench/middleware_cost.py

Drives ``FuseSession.handle`` in-process with GETATTR, READ (4 KiB) and WRITE (4 KiB) of one
file, without middleware and with each middleware alone (and all five together), and prints
the time per request and what the middleware added. Nothing is mounted: this is the CPU the
chain costs, the same on /dev/fuse and virtio-fs. The cache is measured on its hit path
(GETATTR and READ repeat the same request); its WRITE column is its invalidation cost.
"""

from __future__ import annotations

import functools
import os
import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vfsframe_plugins.memory import MemoryBackend, MemoryConfig

from bench.common import fuse_request
from vfsframe.chain import ShareChain
from vfsframe.config import validate_config
from vfsframe.fuse import abi
from vfsframe.runtime import build_chain
from vfsframe.session import FuseSession

BLOCK = 4096
UID = 1000  # requests come from an ordinary user, as most do

# name → middleware config list; "log" writes to /dev/null so the cost is formatting, not I/O.
CONFIGS: dict[str, list[dict[str, Any]]] = {
    "none": [],
    "log": [{"type": "log", "path": os.devnull}],
    "log (op filtered out)": [{"type": "log", "path": os.devnull, "ops": ["rename"]}],
    "metrics": [{"type": "metrics", "listen": None}],
    "acl (3 rules)": [
        {
            "type": "acl",
            "rules": [
                {"path": "/secret/**", "effect": "hide"},
                {"path": "/ro/**", "ops": ["write", "create"], "effect": "deny"},
                {"path": "/**/*.tmp", "uids": [0], "effect": "deny"},
            ],
        }
    ],
    "cache": [{"type": "cache"}],
    "idmap": [{"type": "idmap", "uid_map": [{"guest": 0, "host": 100000, "count": 65536}]}],
}
CONFIGS["all five"] = [
    CONFIGS["log"][0],
    CONFIGS["metrics"][0],
    CONFIGS["acl (3 rules)"][0],
    CONFIGS["cache"][0],
    CONFIGS["idmap"][0],
]


def _request(opcode: int, unique: int, nodeid: int, body: bytes) -> list[memoryview]:
    return [memoryview(fuse_request(opcode, nodeid, body, unique=unique, uid=UID, pid=4242))]


def _reply_header(reply: memoryview) -> tuple[int, int, int]:
    return abi.OUT_HEADER.unpack_from(reply)


class Client:
    """Just enough of a kernel to open one file and replay requests on it."""

    def __init__(self, chain: ShareChain) -> None:
        self.session = FuseSession(chain)
        self.reply = [memoryview(bytearray(BLOCK + 4096))]
        self.unique = 0
        init = abi.INIT_IN.pack(7, 31, 1 << 20, 0xFFFFFFFF)
        self.call(abi.Opcode.INIT, 0, init)
        # Root makes the file; the measured requests come from UID.
        body = abi.CREATE_IN.pack(os.O_RDWR, 0o100666, 0, 0) + b"file\0"
        self.call(abi.Opcode.CREATE, abi.ROOT_ID, body, uid=0)
        entry = abi.ENTRY_OUT.unpack_from(self.reply[0], abi.OUT_HEADER.size)
        self.nodeid = entry[0]
        opened = abi.OPEN_OUT.unpack_from(self.reply[0], abi.OUT_HEADER.size + abi.ENTRY_OUT.size)
        self.fh = opened[0]
        self.call(abi.Opcode.WRITE, self.nodeid, self._write_body(), uid=0)

    def call(self, opcode: int, nodeid: int, body: bytes, uid: int = UID) -> None:
        self.unique += 1
        request = fuse_request(opcode, nodeid, body, unique=self.unique, uid=uid, pid=4242)
        size = self.session.handle([memoryview(request)], self.reply)
        _, error, _ = _reply_header(self.reply[0])
        if error:
            raise OSError(-error, f"opcode {opcode} failed")
        assert size > 0

    def _write_body(self) -> bytes:
        return abi.WRITE_IN.pack(self.fh, 0, BLOCK, 0, 0, os.O_RDWR, 0) + bytes(BLOCK)

    def requests(self) -> dict[str, list[memoryview]]:
        return {
            "GETATTR": _request(abi.Opcode.GETATTR, 7, self.nodeid, abi.GETATTR_IN.pack(0, 0, 0)),
            "READ 4K": _request(
                abi.Opcode.READ,
                8,
                self.nodeid,
                abi.READ_IN.pack(self.fh, 0, BLOCK, 0, 0, os.O_RDWR, 0),
            ),
            "WRITE 4K": _request(abi.Opcode.WRITE, 9, self.nodeid, self._write_body()),
        }


def _per_call_us(function: Callable[[], object], number: int) -> float:
    return timeit.timeit(function, number=number) / number * 1e6


def measure(rounds: int = 7, number: int = 4000) -> dict[str, dict[str, float]]:
    """Best time per request over ``rounds``; the configurations take turns within each round
    so that a noisy neighbour on the machine slows them all alike."""
    clients: dict[str, Client] = {}
    chains = []
    for name, middleware in CONFIGS.items():
        if middleware:
            share = {"tag": "b", "backend": {"type": "memory"}, "middleware": middleware}
            config = validate_config({"share": [share]}, "<bench>").shares[0]
            chain = build_chain(config.backend, config.middleware)
        else:
            chain = ShareChain(MemoryBackend(MemoryConfig()))
        chains.append(chain)
        clients[name] = Client(chain)
    figures: dict[str, dict[str, float]] = {name: {} for name in clients}
    for _ in range(rounds):
        for name, client in clients.items():
            session, reply = client.session, client.reply
            for label, request in client.requests().items():
                call = functools.partial(session.handle, request, reply)
                value = _per_call_us(call, number)
                figures[name][label] = min(value, figures[name].get(label, value))
    for chain in chains:
        chain.close()
    return figures


def report(figures: dict[str, dict[str, float]]) -> list[str]:
    labels = list(next(iter(figures.values())))
    base = figures["none"]
    lines = [
        "per-request cost through FuseSession.handle, memory backend (µs, best of 7 interleaved rounds; "
        "in brackets: added by the middleware)",
        f"  {'middleware':<24}" + "".join(f"{label:>20}" for label in labels),
    ]
    for name, row in figures.items():
        cells = []
        for label in labels:
            value = row[label]
            added = "" if name == "none" else f" ({value - base[label]:+.1f})"
            cells.append(f"{value:.1f}{added}".rjust(20))
        lines.append(f"  {name:<24}" + "".join(cells))
    return lines


if __name__ == "__main__":
    print("\n".join(report(measure())))
