"""The cost of one serving step of a queue thread, on its own: pop a chain, call the session,
push the used element. No server process, no guest, no system calls but the ones the step
makes; the session answers at once. What is left is the device engine's own cost per chain.

Compared: the C step (`ChainServer`) on the C ring, which `vfsframe serve` uses; the Python
step (`QueueService._serve_one`) on the C ring; the Python step on the Python ring
(`VFSFRAME_RING=python`). With `--cold-cache MIB`, MIB of memory is walked before each step,
as a guest's TCG threads do between two of its requests on a shared core
(docs/virtio.md, "Where a guest request's time goes").

Run:  .venv/bin/python bench/virtio_serving_step.py [--chains N] [--cold-cache MIB]
"""

from __future__ import annotations

import argparse
import mmap
import os
import statistics
import time
from collections.abc import Callable

from vfsframe.testing.virtio_driver import MEMFD_SIZE, REGIONS, user_addr
from vfsframe.virtio import virtqueue
from vfsframe.virtio._split_ring import SplitRing
from vfsframe.virtio.descriptors import DESC, DESC_F_NEXT, DESC_F_WRITE
from vfsframe.virtio.dispatch import QueueService
from vfsframe.virtio.memory import GuestMemory, map_regions
from vfsframe.virtio.split_ring import PyRing

SIZE = 256  # queue entries; every chain is a 64-byte request and a 4 KiB reply buffer
DESC_AT, AVAIL_AT, USED_AT, BUFFERS_AT = 0x1000, 0x3000, 0x4000, 0x10000


class InstantSession:
    def handle(self, request: list[memoryview], reply: list[memoryview]) -> int:
        return 16


class GuestRam:
    def __init__(self) -> None:
        fd = os.memfd_create("bench-guest-ram", os.MFD_CLOEXEC)
        os.ftruncate(fd, MEMFD_SIZE)
        self.ram = mmap.mmap(fd, MEMFD_SIZE)
        self.memory = GuestMemory(map_regions(list(REGIONS), [os.dup(fd) for _ in REGIONS]))
        os.close(fd)
        for chain in range(SIZE // 2):
            buffer = BUFFERS_AT + chain * 8192
            DESC.pack_into(self.ram, DESC_AT + 32 * chain, buffer, 64, DESC_F_NEXT, 2 * chain + 1)
            DESC.pack_into(
                self.ram, DESC_AT + 32 * chain + 16, buffer + 4096, 4096, DESC_F_WRITE, 0
            )
        self.avail_idx = 0

    def queue(self, ring: type) -> QueueService:
        self.ram[AVAIL_AT : AVAIL_AT + 4 + 2 * SIZE] = bytes(4 + 2 * SIZE)
        self.ram[USED_AT : USED_AT + 4] = bytes(4)
        self.avail_idx = 0
        vq = virtqueue.VirtQueue(1)
        vq.set_size(SIZE)
        vq.set_addresses(user_addr(DESC_AT), user_addr(AVAIL_AT), user_addr(USED_AT))
        virtqueue.RING_IMPLEMENTATION = ring
        vq.attach(self.memory)
        service = QueueService(vq, InstantSession(), 1, "bench")
        for state, value in ((service._served, 0), (service._busy_since, 0.0)):
            state.append(value)
        service._idle.append(False)
        return service

    def publish(self) -> None:
        """Make every chain of the table available once more."""
        for chain in range(SIZE // 2):
            slot = AVAIL_AT + 4 + 2 * ((self.avail_idx + chain) % SIZE)
            self.ram[slot : slot + 2] = (2 * chain).to_bytes(2, "little")
        self.avail_idx = (self.avail_idx + SIZE // 2) & 0xFFFF
        self.ram[AVAIL_AT + 2 : AVAIL_AT + 4] = self.avail_idx.to_bytes(2, "little")


def step_cost(
    ram: GuestRam, ring: type, c_step: bool, chains: int, evict: Callable[[], None]
) -> float:
    """Seconds per serving step, over `chains` steps."""
    service = ram.queue(ring)
    step = service._serving_step(0) if c_step else lambda: service._serve_one(0)
    spent, served = 0.0, 0
    while served < chains:
        ram.publish()
        while True:
            evict()
            start = time.perf_counter()
            more = step()
            spent += time.perf_counter() - start
            if not more:
                break
            served += 1
    service.vq.detach()
    return spent / served


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chains", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cold-cache", type=int, default=0, metavar="MIB")
    args = parser.parse_args()
    walked = bytearray(args.cold_cache << 20)

    def evict() -> None:
        if walked:
            walked[::64] = bytes(len(walked) // 64)  # a store to every cache line

    ram = GuestRam()
    variants = [
        ("C step, C ring", SplitRing, True),
        ("Python step, C ring", SplitRing, False),
        ("Python step, Python ring", PyRing, False),
    ]
    costs = {name: [] for name, _, _ in variants}
    for _ in range(args.repeat):
        for name, ring, c_step in variants:
            costs[name].append(step_cost(ram, ring, c_step, args.chains, evict))
    where = f"{args.cold_cache} MiB walked before each step" if walked else "caches warm"
    print(f"one serving step, {args.chains} chains, median of {args.repeat} ({where}):")
    base = statistics.median(costs[variants[0][0]])
    for name, _, _ in variants:
        cost = statistics.median(costs[name])
        print(f"  {name:26} {cost * 1e6:7.2f} µs per chain  ({cost / base:.2f}x the C step)")


if __name__ == "__main__":
    main()
