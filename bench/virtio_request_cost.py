"""Per-request cost of the virtio-fs device engine, without a guest: a test front-end (QEMU's
and the guest driver's role, `vfsframe.testing.virtio_driver`) connects to the server's
vhost-user socket, shares a memfd as guest RAM and keeps K FUSE requests in flight on one
request queue. Measured for `vfsframe serve` (passthrough) and the reference C virtiofsd on
the same kind of directory, in the same run:

- requests per second, and
- the server's CPU time per request (user + system, from /proc/PID/stat),

for small metadata requests (`meta`: GETATTR of the root and LOOKUP of an existing file,
alternating: the engine's own overhead in the guest benchmarks' metadata workloads), for
1 MiB WRITEs given as 256 page descriptors in an indirect table (`write`), as a guest's page
cache sends them, and for 1 MiB READs answered into 256 such pages (`read`, of a sparse file:
the host's copy of zeroes, without a disk under it). A TCG guest makes those benchmarks
noisy (the guest's vCPUs compete with the server for the same cores); this one isolates the
server. To see where the time goes, run py-spy on the server while it runs
(`py-spy record --gil -p PID`: the worker threads, not just the main one).

`--cold-cache MIB` models what a guest does to the server between two requests: the
benchmark and the servers share one CPU, and the front-end walks MIB of memory after each
completion, as a TCG vCPU thread does while the guest works on the reply, so every request
is served with cold CPU caches. The difference from `--cold-cache 0` (the same CPU, caches
left warm) is what the server pays for the memory its request path touches: in the guest
benchmarks that, not the warm path, is the per-request cost.

Run as root:  .venv/bin/python bench/virtio_request_cost.py [--workload meta write read]
                 [--requests 20000] [--inflight 1 4] [--repeat 3] [--cold-cache 16]
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
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "guest"))

from servers import ReferenceVirtiofsd, Server, VfsframePassthrough

from bench.common import cpu_seconds
from vfsframe.fuse import abi
from vfsframe.testing.virtio_driver import TestFrontEnd

IN_HEADER = struct.Struct("<IIQQIIII")  # len, opcode, unique, nodeid, uid, gid, pid, padding
OUT_HEADER = struct.Struct("<IiQ")
REPLY_ROOM = 4096
PAGE = 4096
PAGES = 256  # a 1 MiB WRITE, one descriptor per page
MiB = 1 << 20
WRITE_SPAN = 64 * MiB
QUEUE_SIZE = 1024  # a chain may not be longer than the queue (virtio 2.7.5.3.1)


class Driver:
    """K request slots on request queue 1, each with its own request, reply and indirect
    table space; WRITE payloads come from one shared 1 MiB buffer of 4 KiB pages, given as one
    descriptor per page as a guest's page cache gives them."""

    def __init__(self, fe: TestFrontEnd, inflight: int) -> None:
        self.fe = fe
        self.unique = 0
        self.slots = [
            (fe.alloc(256), fe.alloc(REPLY_ROOM), fe.alloc(16 * (PAGES + 2)))
            for _ in range(inflight)
        ]
        # Page-aligned, as a guest's pages are (none straddles the test RAM's two regions),
        # and every other page: the engine joins neighbouring pages into one buffer, and a
        # guest's page cache gives neighbours only some of the time.
        base = (fe.alloc(PAGE * (2 * PAGES + 1)) + PAGE - 1) & ~(PAGE - 1)
        self.pages = [(base + 2 * i * PAGE, PAGE) for i in range(PAGES)]
        self.data_pages = PAGES  # lowered to the server's max_write after INIT
        self.by_head: dict[int, int] = {}

    def submit(self, slot: int, opcode: int, nodeid: int, body: bytes, payload: str = "") -> None:
        """Queue a request; `payload` "in" sends the data pages after it (WRITE), "out" gives
        them as room for the reply's data (READ)."""
        self.unique += 1
        pages = self.pages[: self.data_pages] if payload else []
        data = PAGE * len(pages) if payload == "in" else 0
        size = IN_HEADER.size + len(body)
        req = IN_HEADER.pack(size + data, opcode, self.unique, nodeid, 0, 0, 1, 0) + body
        rd, wr, table = self.slots[slot]
        self.fe.alloc(size, req, at=rd)
        if payload == "out":
            readable, writable = [(rd, size)], [(wr, OUT_HEADER.size), *pages]
        else:
            readable, writable = [(rd, size), *pages], [(wr, REPLY_ROOM)]
        head = self.fe.add_chain(1, readable, writable, indirect=bool(payload), table=table)
        self.by_head[head] = slot

    def reply(self, slot: int, size: int) -> bytes:
        return self.fe.read(self.slots[slot][1] + OUT_HEADER.size, size)

    def complete(self) -> list[int]:
        """Wait for at least one completion; the slots that completed."""
        fe = self.fe
        q = fe.queues[1]
        deadline = time.monotonic() + 30
        while fe.used_idx(1) == q.last_used:
            fe.set_used_event(1, q.last_used)  # event-idx: interrupt me on the next one
            if fe.used_idx(1) != q.last_used:
                break
            if time.monotonic() > deadline:
                raise TimeoutError("no completion in 30 s")
            fe.wait_call(1, timeout=1)
        count = (fe.used_idx(1) - q.last_used) & 0xFFFF
        done = []
        for head, _length in fe.wait_used(1, count):
            slot = self.by_head.pop(head)
            _, error, _ = OUT_HEADER.unpack(fe.read(self.slots[slot][1], OUT_HEADER.size))
            if error:
                raise RuntimeError(f"request failed with errno {-error}")
            done.append(slot)
        return done

    def call(self, opcode: int, nodeid: int, body: bytes, reply_size: int) -> bytes:
        self.submit(0, opcode, nodeid, body)
        self.complete()
        return self.reply(0, reply_size)


# A workload starts on a driver and gives the function sending request n on a slot, and how
# many of its units (requests, MiB) one request is.
Sender = Callable[[int, int], None]


def metadata_requests(driver: Driver) -> tuple[Sender, float]:
    """GETATTR of the root and LOOKUP of an existing file, alternating."""
    getattr_body = abi.GETATTR_IN.pack(0, 0, 0)

    def send(slot: int, sent: int) -> None:
        if sent % 2:
            driver.submit(slot, abi.Opcode.LOOKUP, abi.ROOT_ID, b"file\0")
        else:
            driver.submit(slot, abi.Opcode.GETATTR, abi.ROOT_ID, getattr_body)

    return send, 1.0


def create_big_file(driver: Driver) -> tuple[int, int]:
    """CREATE a file of WRITE_SPAN bytes (sparse); its node id and handle."""
    create = abi.CREATE_IN.pack(os.O_RDWR | os.O_CREAT, 0o100644, 0, 0) + b"big\0"
    reply = driver.call(abi.Opcode.CREATE, abi.ROOT_ID, create, abi.ENTRY_OUT.size + 16)
    nodeid = abi.ENTRY_OUT.unpack_from(reply)[0]
    fh = abi.OPEN_OUT.unpack_from(reply, abi.ENTRY_OUT.size)[0]
    valid = abi.FATTR_SIZE | abi.FATTR_FH
    grow = abi.SETATTR_IN.pack(valid, 0, fh, WRITE_SPAN, *[0] * 12)
    driver.call(abi.Opcode.SETATTR, nodeid, grow, 0)
    return nodeid, fh


def data_requests(
    opcode: int, body: struct.Struct, payload: str
) -> Callable[[Driver], tuple[Sender, float]]:
    """READs or WRITEs of 1 MiB (or the server's max_write), cycling over a file's WRITE_SPAN
    bytes."""

    def start(driver: Driver) -> tuple[Sender, float]:
        nodeid, fh = create_big_file(driver)
        size = PAGE * driver.data_pages

        def send(slot: int, sent: int) -> None:
            args = body.pack(fh, sent * size % WRITE_SPAN, size, 0, 0, os.O_RDWR, 0)
            driver.submit(slot, opcode, nodeid, args, payload=payload)

        return send, size / MiB

    return start


WORKLOADS = {
    "meta": (metadata_requests, "request"),
    "write": (data_requests(abi.Opcode.WRITE, abi.WRITE_IN, "in"), "MiB"),
    "read": (data_requests(abi.Opcode.READ, abi.READ_IN, "out"), "MiB"),
}


def evict_caches(junk: bytearray) -> None:
    """Write one byte of every cache line of junk: the CPU's caches now hold junk."""
    junk[::64] = bytes(len(junk) // 64)


def measure(
    server: Server, workload: str, requests: int, inflight: int, junk: bytearray | None = None
) -> tuple[float, float]:
    """(units/s, server CPU µs per unit) for `requests` requests of the workload; with junk,
    the caches are evicted after each completion."""
    fe = TestFrontEnd(socket_path=server.socket, queue_size=QUEUE_SIZE)
    try:
        fe.start()
        driver = Driver(fe, inflight)
        flags = abi.InitFlag.BIG_WRITES | abi.InitFlag.MAX_PAGES  # as a Linux guest asks
        init = abi.INIT_IN.pack(7, 31, 1 << 17, flags)
        max_write = abi.INIT_OUT.unpack(driver.call(abi.Opcode.INIT, 0, init, abi.INIT_OUT.size))[6]
        driver.data_pages = min(PAGES, max_write // PAGE)
        send, units = WORKLOADS[workload][0](driver)
        cpu0, t0 = cpu_seconds(server.proc.pid), time.perf_counter()  # type: ignore[union-attr]
        for sent in range(inflight):
            send(sent, sent)
        sent, done = inflight, 0
        while done < requests:
            completed = driver.complete()
            if junk is not None:
                evict_caches(junk)
            for slot in completed:
                done += 1
                if sent < requests:
                    send(slot, sent)
                    sent += 1
        elapsed = time.perf_counter() - t0
        cpu = cpu_seconds(server.proc.pid) - cpu0  # type: ignore[union-attr]
        return requests * units / elapsed, cpu / (requests * units) * 1e6
    finally:
        fe.close()


def medians(samples: list[tuple[float, float]]) -> list[float]:
    return [statistics.median(column) for column in zip(*samples, strict=True)]


def ratio(ours: float, ref: float) -> str:
    return f"{ours / ref:.2f}" if ref else "n/a (CPU below the clock tick; use more --requests)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", choices=sorted(WORKLOADS), nargs="+", default=["meta"])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--inflight", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--cold-cache", type=int, metavar="MIB",
        help="share one CPU with the servers and walk MIB of memory after each completion "
        "(0: one CPU, caches left warm: the baseline to compare with)",
    )  # fmt: skip
    args = parser.parse_args()
    junk = None
    if args.cold_cache is not None:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # the servers inherit it
        junk = bytearray(args.cold_cache * MiB) if args.cold_cache else None
    cases = [(w, k) for w in args.workload for k in args.inflight]
    rows: dict[tuple[str, str, int], list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-vrc-") as tmp:
        for round_ in range(args.repeat):
            for workload, inflight in cases:
                # The C virtiofsd exits when its front-end goes: one process per measurement.
                for make in (ReferenceVirtiofsd, VfsframePassthrough):
                    run = Path(tempfile.mkdtemp(prefix=f"r{round_}-", dir=tmp))
                    server = make(run)
                    (server.source / "file").write_text("x")
                    server.start()
                    try:
                        result = measure(server, workload, args.requests, inflight, junk)
                    finally:
                        server.stop()
                    rows.setdefault((server.name, workload, inflight), []).append(result)
                    unit = WORKLOADS[workload][1]
                    print(
                        f"  {server.name:20} {workload} inflight {inflight}: "
                        f"{result[0]:8,.0f} {unit}/s, {result[1]:7.1f} µs CPU/{unit}",
                        flush=True,
                    )
    cold = {
        None: "",
        0: ", on one CPU",
    }.get(args.cold_cache, f", on one CPU, {args.cold_cache} MiB walked after each completion")
    print(f"\nmedians of {args.repeat} ({args.requests} requests each{cold}):")
    for workload, inflight in cases:
        ours = medians(rows[(VfsframePassthrough.name, workload, inflight)])
        ref = medians(rows[(ReferenceVirtiofsd.name, workload, inflight)])
        unit = WORKLOADS[workload][1]
        print(
            f"  {workload} inflight {inflight}: vfsframe {ours[0]:,.0f} {unit}/s "
            f"{ours[1]:.1f} µs CPU/{unit}, virtiofsd {ref[0]:,.0f} {unit}/s "
            f"{ref[1]:.1f} µs CPU/{unit}; throughput ratio {ratio(ours[0], ref[0])}, "
            f"CPU ratio {ratio(ours[1], ref[1])}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
