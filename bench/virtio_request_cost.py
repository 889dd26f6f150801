"""Per-request cost of the virtio-fs device engine, without a guest: a test front-end (QEMU's
and the guest driver's role, `vfsframe.testing.virtio_driver`) connects to the server's
vhost-user socket, shares a memfd as guest RAM and keeps K FUSE requests in flight on one
request queue. Measured for `vfsframe serve` (passthrough) and the reference C virtiofsd on
the same kind of directory, in the same run:

- requests per second, and
- the server's CPU time per request (user + system, from /proc/PID/stat),

for small metadata requests (GETATTR of the root and LOOKUP of an existing file, alternating),
the part of the guest benchmarks' metadata workloads that is the engine's own overhead. A TCG
guest makes those benchmarks noisy (the guest's vCPUs compete with the server for the same
cores); this one isolates the server. To see where the time goes, run py-spy on the server
while it runs (`py-spy record --gil -p PID`: the worker threads, not just the main one).

Run as root:  .venv/bin/python bench/virtio_request_cost.py [--requests 20000] [--inflight 1 4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "guest"))

from servers import ReferenceVirtiofsd, Server, VfsframePassthrough

from vfsframe.fuse import abi
from vfsframe.testing.virtio_driver import TestFrontEnd

IN_HEADER = struct.Struct("<IIQQIIII")  # len, opcode, unique, nodeid, uid, gid, pid, padding
OUT_HEADER = struct.Struct("<IiQ")
REPLY_ROOM = 4096
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children (a sandboxed `vfsframe serve` serves
    from a child of its supervisor)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14, 15)
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return own + sum(cpu_seconds(int(child)) for child in children)


class Driver:
    """K request slots on request queue 1, each with its own request and reply buffers."""

    def __init__(self, fe: TestFrontEnd, inflight: int) -> None:
        self.fe = fe
        self.unique = 0
        self.slots = [(fe.alloc(256), fe.alloc(REPLY_ROOM)) for _ in range(inflight)]
        self.by_head: dict[int, int] = {}

    def submit(self, slot: int, opcode: int, nodeid: int, body: bytes) -> None:
        self.unique += 1
        req = IN_HEADER.pack(IN_HEADER.size + len(body), opcode, self.unique, nodeid, 0, 0, 1, 0)
        rd, wr = self.slots[slot]
        self.fe.alloc(len(req), req + body, at=rd)
        head = self.fe.add_chain(1, [(rd, len(req) + len(body))], [(wr, REPLY_ROOM)])
        self.by_head[head] = slot

    def complete(self) -> list[int]:
        """Wait for at least one completion; the slots that completed."""
        fe = self.fe
        q = fe.queues[1]
        while fe.used_idx(1) == q.last_used:
            fe.set_used_event(1, q.last_used)  # event-idx: interrupt me on the next one
            if fe.used_idx(1) != q.last_used:
                break
            fe.wait_call(1, timeout=10)
        count = (fe.used_idx(1) - q.last_used) & 0xFFFF
        done = []
        for head, _length in fe.wait_used(1, count):
            slot = self.by_head.pop(head)
            _, error, _ = OUT_HEADER.unpack(fe.read(self.slots[slot][1], OUT_HEADER.size))
            if error:
                raise RuntimeError(f"request failed with errno {-error}")
            done.append(slot)
        return done


def measure(server: Server, requests: int, inflight: int) -> tuple[float, float]:
    """(requests/s, server CPU µs per request) for `requests` alternating GETATTR/LOOKUP."""
    fe = TestFrontEnd(socket_path=server.socket, queue_size=256)
    try:
        fe.start()
        driver = Driver(fe, inflight)
        driver.submit(0, abi.Opcode.INIT, 0, abi.INIT_IN.pack(7, 31, 1 << 17, 0))
        driver.complete()
        getattr_body = abi.GETATTR_IN.pack(0, 0, 0)
        lookup_body = b"file\0"
        cpu0, t0 = cpu_seconds(server.proc.pid), time.perf_counter()  # type: ignore[union-attr]
        sent = 0

        def send(slot: int) -> None:
            nonlocal sent
            if sent % 2:
                driver.submit(slot, abi.Opcode.LOOKUP, abi.ROOT_ID, lookup_body)
            else:
                driver.submit(slot, abi.Opcode.GETATTR, abi.ROOT_ID, getattr_body)
            sent += 1

        for slot in range(inflight):
            send(slot)
        done = 0
        while done < requests:
            for slot in driver.complete():
                done += 1
                if sent < requests:
                    send(slot)
        elapsed = time.perf_counter() - t0
        cpu = cpu_seconds(server.proc.pid) - cpu0  # type: ignore[union-attr]
        return requests / elapsed, cpu / requests * 1e6
    finally:
        fe.close()


def medians(samples: list[tuple[float, float]]) -> list[float]:
    return [statistics.median(column) for column in zip(*samples, strict=True)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--inflight", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-vrc-") as tmp:
        work = Path(tmp)
        rows: dict[tuple[str, int], list[tuple[float, float]]] = {}
        for round_ in range(args.repeat):
            # The C virtiofsd exits when its front-end goes: one process per measurement.
            for inflight in args.inflight:
                for make in (
                    lambda run: ReferenceVirtiofsd(run),
                    lambda run: VfsframePassthrough(run, request_queues=1, log_level="warning"),
                ):
                    run = Path(tempfile.mkdtemp(prefix=f"r{round_}-k{inflight}-", dir=work))
                    server = make(run)
                    (server.source / "file").write_text("x")
                    server.start()
                    try:
                        result = measure(server, args.requests, inflight)
                    finally:
                        server.stop()
                    rows.setdefault((server.name, inflight), []).append(result)
                    print(
                        f"  {server.name:20} inflight {inflight}: {result[0]:8,.0f} req/s, "
                        f"{result[1]:6.1f} µs CPU/request",
                        flush=True,
                    )
        print(f"\nmedians of {args.repeat} ({args.requests} requests each):")
        for inflight in args.inflight:
            ours = medians(rows[(VfsframePassthrough.name, inflight)])
            ref = medians(rows[(ReferenceVirtiofsd.name, inflight)])
            print(
                f"  inflight {inflight}: vfsframe {ours[0]:,.0f} req/s {ours[1]:.1f} µs CPU, "
                f"virtiofsd {ref[0]:,.0f} req/s {ref[1]:.1f} µs CPU; "
                f"throughput ratio {ours[0] / ref[0]:.2f}, CPU ratio {ours[1] / ref[1]:.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
