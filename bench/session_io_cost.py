"""The FUSE session's own cost for a large READ and WRITE, in process: one passthrough share,
requests and replies handed over as 4 KiB pages (as a virtio-fs guest's page cache hands them),
against the bare `os.preadv` / `os.pwritev` of the same pages on the same file, which is the
floor any server pays. No transport, no guest.

Run:  .venv/bin/python bench/session_io_cost.py [--mib-per-request 1] [--requests 2000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import fuse_request, passthrough_session
from vfsframe.fuse import abi
from vfsframe.fuse.abi import Opcode
from vfsframe.session import FuseSession

PAGE = 4096


def pages(buffer: bytearray, offset: int, count: int) -> list[memoryview]:
    view = memoryview(buffer)
    return [view[offset + PAGE * i : offset + PAGE * (i + 1)] for i in range(count)]


class Share:
    """A passthrough session over a temporary directory holding one file, opened read-write."""

    def __init__(self, root: Path, size: int) -> None:
        (root / "data").write_bytes(os.urandom(size))
        self.session: FuseSession = passthrough_session(root, root)
        self.reply = bytearray(4096)
        self.nodeid = self.field(fuse_request(Opcode.LOOKUP, 1, b"data\0", pid=1))
        self.fh = self.field(
            fuse_request(Opcode.OPEN, self.nodeid, struct.pack("<II", os.O_RDWR, 0), pid=1)
        )
        self.fd = os.open(root / "data", os.O_RDWR)

    def call(self, req: bytes) -> None:
        self.session.handle([memoryview(req)], [memoryview(self.reply)])
        error = struct.unpack_from("<i", self.reply, 4)[0]
        assert error == 0, f"{req[4]}: error {error}"

    def field(self, req: bytes) -> int:
        """The first u64 of the reply body (an entry's node id, an open's handle)."""
        self.call(req)
        return struct.unpack_from("<Q", self.reply, abi.OUT_HEADER.size)[0]


def per_call(action: Callable[[], object], count: int) -> float:
    start = time.process_time()
    for _ in range(count):
        action()
    return (time.process_time() - start) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib-per-request", type=int, default=1)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    count = args.mib_per_request * 256
    size = count * PAGE
    with tempfile.TemporaryDirectory(prefix="vfsframe-bench-") as tmp:
        share = Share(Path(tmp), size)
        rw = struct.pack("<QQIIQII", share.fh, 0, size, 0, 0, 0, 0)
        read_req = [memoryview(fuse_request(Opcode.READ, share.nodeid, rw, pid=1))]
        read_reply = bytearray(abi.OUT_HEADER.size + size)
        read_views = [memoryview(read_reply)[: abi.OUT_HEADER.size]]
        read_views += pages(read_reply, abi.OUT_HEADER.size, count)
        write_data = bytearray(os.urandom(size))
        write_req = [memoryview(fuse_request(Opcode.WRITE, share.nodeid, rw, pid=1, payload=size))]
        write_req += pages(write_data, 0, count)
        write_reply = [memoryview(bytearray(64))]
        data_pages = pages(read_reply, abi.OUT_HEADER.size, count)
        source_pages = pages(write_data, 0, count)
        cases = {
            "READ": (
                lambda: share.session.handle(read_req, read_views),
                lambda: os.preadv(share.fd, data_pages, 0),
            ),
            "WRITE": (
                lambda: share.session.handle(write_req, write_reply),
                lambda: os.pwritev(share.fd, source_pages, 0),
            ),
        }
        print(f"{args.mib_per_request} MiB per request in {count} pages, medians of {args.repeat}:")
        for name, (session, native) in cases.items():
            costs = [per_call(session, args.requests) for _ in range(args.repeat)]
            floor = [per_call(native, args.requests) for _ in range(args.repeat)]
            ours, bare = statistics.median(costs), statistics.median(floor)
            print(
                f"  {name:5} session.handle {ours * 1e6:7.1f} µs, bare syscall {bare * 1e6:7.1f}"
                f" µs: {ours / bare:.2f}x, {(ours - bare) * 1e6:.1f} µs of session per request"
            )
        os.close(share.fd)


if __name__ == "__main__":
    main()
