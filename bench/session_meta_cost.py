"""The FUSE session's cost per metadata request, in process: the requests a Linux guest sends
for `bench/guest_virtio.py`'s create / stat / rename / unlink workload, replayed on a
passthrough share (no transport, no guest), timed one by one and summed per opcode.

Per file, as the guest's kernel sends them (counted on both servers with the C virtiofsd's
debug log and vfsframe's own count): LOOKUP of the new name (ENOENT), CREATE, FLUSH twice
(the shell closes a dup of the descriptor too), RELEASE, GETATTR of the directory (the
create made its attributes stale, and the next path walk checks its permission), LOOKUP of
the file, RENAME into a second directory, UNLINK there.

`--cold-cache MIB` walks MIB of memory before each request, as a guest's TCG threads do to the
server's CPU caches between two requests (see docs/virtio.md, "Where a guest request's time
goes"); without it every request runs with warm caches.

Run:  .venv/bin/python bench/session_meta_cost.py [--files 2000] [--repeat 3] [--cold-cache 16]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import fresh_filesystem, fuse_request, passthrough_session
from vfsframe.fuse import abi
from vfsframe.fuse.abi import Opcode

MiB = 1 << 20


class Share:
    """A passthrough session over a temporary directory, INIT done, with two directories."""

    def __init__(self, root: Path) -> None:
        (root / "share").mkdir()
        self.session = passthrough_session(root, root / "share")
        self.reply = memoryview(bytearray(4096))
        self.unique = 1  # INIT's
        self.elapsed = 0  # ns the last call spent in session.handle
        mkdir = abi.MKDIR_IN.pack(0o755, 0o022)
        self.dirs = [self.field(self.call(Opcode.MKDIR, 1, mkdir + n)) for n in (b"a\0", b"b\0")]

    def call(self, opcode: int, nodeid: int, body: bytes, expect: int = 0) -> memoryview:
        """Serve one request; its reply body. ``expect`` is the errno it must fail with."""
        self.unique += 1
        request = [memoryview(fuse_request(opcode, nodeid, body, unique=self.unique, pid=1))]
        start = time.perf_counter_ns()
        size = self.session.handle(request, [self.reply])
        self.elapsed = time.perf_counter_ns() - start
        error = abi.OUT_HEADER.unpack_from(self.reply)[1]
        if -error != expect:
            raise RuntimeError(f"{Opcode(opcode).name}: errno {-error}, expected {expect}")
        return self.reply[abi.OUT_HEADER.size : size]

    @staticmethod
    def field(body: memoryview, offset: int = 0) -> int:
        return struct.unpack_from("<Q", body, offset)[0]


def guest_requests(share: Share, files: int) -> Iterator[tuple[int, int, bytes, int]]:
    """(opcode, nodeid, body, expected errno) of each request in the guest's order; the
    node ids and handles come from the replies to the earlier ones."""
    a, b = share.dirs
    create = abi.CREATE_IN.pack(os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o100644, 0o022, 0)
    for i in range(files):
        name = f"f{i}\0".encode()
        yield Opcode.LOOKUP, a, name, 2
        yield Opcode.CREATE, a, create + name, 0
        fh = share.field(share.reply[abi.OUT_HEADER.size :], abi.ENTRY_OUT.size)
        flush = abi.FLUSH_IN.pack(fh, 0, 0, 0)
        yield Opcode.FLUSH, 0, flush, 0
        yield Opcode.FLUSH, 0, flush, 0
        yield Opcode.RELEASE, 0, abi.RELEASE_IN.pack(fh, os.O_WRONLY, 0, 0), 0
        yield Opcode.GETATTR, a, abi.GETATTR_IN.pack(0, 0, 0), 0
        yield Opcode.LOOKUP, a, name, 0
        yield Opcode.RENAME, a, abi.RENAME_IN.pack(b) + name + name, 0
        yield Opcode.UNLINK, b, name, 0


def run(share: Share, files: int, junk: bytearray | None) -> dict[str, list[int]]:
    """Nanoseconds of session.handle per request, by opcode name."""
    times: dict[str, list[int]] = {}
    for opcode, nodeid, body, expect in guest_requests(share, files):
        if junk is not None:
            junk[::64] = bytes(len(junk) // 64)
        share.call(opcode, nodeid, body, expect)
        times.setdefault(Opcode(opcode).name, []).append(share.elapsed)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cold-cache", type=int, metavar="MIB", help="walk MIB before each")
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"), help="scratch directory")
    args = parser.parse_args()
    junk = bytearray(args.cold_cache * MiB) if args.cold_cache else None
    medians: dict[str, list[float]] = {}
    per_file: list[float] = []
    with (
        tempfile.TemporaryDirectory(prefix="vfsframe-bench-", dir=args.dir) as tmp,
        contextlib.ExitStack() as stack,
    ):
        if os.geteuid() == 0:  # a file system of its own: a create costs what was deleted
            stack.enter_context(fresh_filesystem(Path(tmp), 256 * MiB))
        share = Share(Path(tmp))
        stack.callback(share.session.chain.close)  # its root descriptor, before umount
        for _ in range(args.repeat):
            times = run(share, args.files, junk)
            for name, samples in times.items():
                medians.setdefault(name, []).append(statistics.median(samples) / 1000)
            per_file.append(sum(map(sum, times.values())) / args.files / 1000)
    caches = f"{args.cold_cache} MiB walked before each request" if junk else "caches warm"
    print(f"{args.files} files, {caches}; median µs per request, median of {args.repeat} runs:")
    for name, values in medians.items():
        print(f"  {name:8} {statistics.median(values):7.1f} µs")
    print(f"  per file (9 requests) {statistics.median(per_file):7.1f} µs")


if __name__ == "__main__":
    main()
