"""A vhost-user front-end and virtio driver in one, for testing the device without QEMU.

It plays both QEMU (vhost-user messages over a socketpair, memfd guest RAM passed with
SCM_RIGHTS) and the guest driver (descriptor tables, avail ring, kicks), so tests can write any
chain a guest could write, well-formed or not, and read back what the device did.

Guest RAM layout: one memfd of 6 MiB. Two adjacent guest-physical regions, [0, 2M) and
[2M, 4M), at unrelated front-end virtual addresses (so the translation is really exercised);
the memfd's last 2 MiB are never given to the device and hold a guard pattern that must
survive anything a guest does.
"""

from __future__ import annotations

import mmap
import os
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass

from vfsframe.virtio import protocol as p
from vfsframe.virtio.descriptors import DESC, DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE
from vfsframe.virtio.device import VhostUserFsDevice

MiB = 1 << 20
MEMFD_SIZE = 6 * MiB
GUARD_OFFSET = 4 * MiB
GUARD_BYTE = 0xA5
REGIONS = (
    p.RegionDescription(guest_addr=0, size=2 * MiB, user_addr=0x7F00_1000_0000, mmap_offset=0),
    p.RegionDescription(2 * MiB, 2 * MiB, user_addr=0x7E00_5000_0000, mmap_offset=2 * MiB),
)
RING_AREA = 0x1000  # rings of queue i at RING_AREA + i * RING_STRIDE
RING_STRIDE = 0x10000
BUFFER_AREA = 0x100000  # buffers are bump-allocated from here up to the guard
DEFAULT_FEATURES = (
    1 << p.VIRTIO_F_VERSION_1
    | 1 << p.VIRTIO_RING_F_INDIRECT_DESC
    | 1 << p.VIRTIO_RING_F_EVENT_IDX
    | 1 << p.VHOST_USER_F_PROTOCOL_FEATURES
)
USED_ELEM = struct.Struct("<II")


def user_addr(gpa: int) -> int:
    for r in REGIONS:
        if r.guest_addr <= gpa < r.guest_addr + r.size:
            return r.user_addr + gpa - r.guest_addr
    raise ValueError(f"{gpa:#x} is not guest RAM")


@dataclass
class DriverQueue:
    index: int
    size: int
    desc: int  # guest-physical addresses of the three parts
    avail: int
    used: int
    kick: int
    call: int
    next_desc: int = 0
    avail_idx: int = 0
    last_used: int = 0


class TestFrontEnd:
    """Drives a vhost-user-fs device: in-process through a socketpair (give `device`), or a
    server's Unix socket (give `socket_path`), exactly as QEMU would connect to it."""

    __test__ = False  # not a pytest class

    def __init__(
        self,
        device: VhostUserFsDevice | None = None,
        queue_size: int = 64,
        socket_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.device = device
        self._init_guest(queue_size)
        if socket_path is not None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(os.fspath(socket_path))
        else:
            assert device is not None, "give a device or a socket path"
            self.sock, self._theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            self._thread = threading.Thread(target=self._serve, daemon=True)
            self._thread.start()

    def _init_guest(self, queue_size: int) -> None:
        self.queue_size = queue_size
        self.memfd = os.memfd_create("test-guest-ram", os.MFD_CLOEXEC)
        os.ftruncate(self.memfd, MEMFD_SIZE)
        self.ram = memoryview(mmap.mmap(self.memfd, MEMFD_SIZE))
        self.ram[GUARD_OFFSET:] = bytes([GUARD_BYTE]) * (MEMFD_SIZE - GUARD_OFFSET)
        # Ring indices are shared with a device running concurrently: they must be single
        # 16-bit loads and stores, as a real driver's are (struct would go byte by byte and
        # the device could see a torn index).
        self._ram16 = self.ram.cast("H")
        self._thread: threading.Thread | None = None
        self.queues: dict[int, DriverQueue] = {}
        self._next_buffer = BUFFER_AREA
        self.features = 0
        self.protocol_features = 0

    @classmethod
    def over_socket(cls, sock: socket.socket, queue_size: int = 64) -> TestFrontEnd:
        """A front-end on an already-connected socket (e.g. one end of a socketpair whose
        other end a server inherited)."""
        fe = cls.__new__(cls)
        fe._init_guest(queue_size)
        fe.device = None
        fe.sock = sock
        return fe

    def _serve(self) -> None:
        assert self.device is not None
        try:
            self.device.serve(self._theirs)
        finally:
            self._theirs.close()

    # -- vhost-user side (QEMU's role) ---------------------------------------------------

    def send(
        self,
        request: int,
        payload: bytes = b"",
        fds: list[int] | None = None,
        need_reply: bool = False,
    ) -> None:
        flags = p.FLAG_NEED_REPLY if need_reply else 0
        p.send_message(self.sock, request, payload, fds, flags)

    def recv_reply(self, request: int) -> bytes:
        self.sock.settimeout(10)
        msg = p.recv_message(self.sock)
        assert msg is not None, "device closed the connection"
        assert msg.request == request, (msg.request, request)
        assert msg.flags & p.FLAG_REPLY
        return msg.payload

    def call(self, request: int, payload: bytes = b"", fds: list[int] | None = None) -> int:
        """Send with NEED_REPLY and return the REPLY_ACK status (0 = success)."""
        self.send(request, payload, fds, need_reply=True)
        return p.U64.unpack(self.recv_reply(request))[0]

    def get_u64(self, request: int) -> int:
        self.send(request)
        return p.U64.unpack(self.recv_reply(request))[0]

    def negotiate(
        self, features: int = DEFAULT_FEATURES, protocol_features: int | None = None
    ) -> None:
        offered = self.get_u64(p.Request.GET_FEATURES)
        self.send(p.Request.SET_OWNER)
        offered_pf = self.get_u64(p.Request.GET_PROTOCOL_FEATURES)
        pf = offered_pf if protocol_features is None else protocol_features
        self.send(p.Request.SET_PROTOCOL_FEATURES, p.U64.pack(pf))
        self.protocol_features = pf
        self.send(p.Request.SET_FEATURES, p.U64.pack(features & offered))
        self.features = features & offered

    def set_mem_table(self, regions: tuple[p.RegionDescription, ...] = REGIONS) -> int:
        fds = [os.dup(self.memfd) for _ in regions]
        try:
            return self.call(p.Request.SET_MEM_TABLE, p.pack_mem_table(list(regions)), fds)
        finally:
            for fd in fds:
                os.close(fd)

    def setup_queue(self, index: int, size: int | None = None, base: int = 0) -> DriverQueue:
        size = size or self.queue_size
        desc = RING_AREA + index * RING_STRIDE
        avail = desc + 16 * size
        used = (avail + 6 + 2 * size + 3) & ~3
        self.ram[desc : used + 6 + 8 * size] = bytes(used + 6 + 8 * size - desc)
        kick = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        call = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        q = DriverQueue(index, size, desc, avail, used, kick, call, avail_idx=base, last_used=base)
        self._ram16[(avail + 2) // 2] = base
        self._ram16[(used + 2) // 2] = base
        self.queues[index] = q
        self.send(p.Request.SET_VRING_NUM, p.VRING_STATE.pack(index, size))
        self.send(p.Request.SET_VRING_BASE, p.VRING_STATE.pack(index, base))
        self.send(
            p.Request.SET_VRING_ADDR,
            p.VRING_ADDR.pack(index, 0, user_addr(desc), user_addr(used), user_addr(avail), 0),
        )
        self.send(p.Request.SET_VRING_CALL, p.U64.pack(index), [call])
        self.send(p.Request.SET_VRING_KICK, p.U64.pack(index), [kick])
        self.send(p.Request.SET_VRING_ENABLE, p.VRING_STATE.pack(index, 1))
        return q

    def start(self, request_queues: int = 1) -> None:
        self.negotiate()
        assert self.set_mem_table() == 0
        for i in range(1 + request_queues):
            self.setup_queue(i)

    def get_vring_base(self, index: int) -> int:
        self.send(p.Request.GET_VRING_BASE, p.VRING_STATE.pack(index, 0))
        return p.VRING_STATE.unpack(self.recv_reply(p.Request.GET_VRING_BASE))[1]

    def close(self) -> None:
        self._ram16.release()
        self.sock.close()
        if self._thread is not None:
            self._thread.join(timeout=30)
        for q in self.queues.values():
            os.close(q.kick)
            os.close(q.call)
        self.queues.clear()
        os.close(self.memfd)

    # -- guest side (the driver's role) --------------------------------------------------

    def alloc(self, size: int, data: bytes | None = None, at: int | None = None) -> int:
        if at is None:
            at = self._next_buffer
            self._next_buffer = (at + size + 63) & ~63
            assert self._next_buffer <= GUARD_OFFSET, "test buffers exhausted"
        if data is not None:
            self.ram[at : at + len(data)] = data
        return at

    def read(self, gpa: int, size: int) -> bytes:
        return bytes(self.ram[gpa : gpa + size])

    def guard_intact(self) -> bool:
        return bytes(self.ram[GUARD_OFFSET:]) == bytes([GUARD_BYTE]) * (MEMFD_SIZE - GUARD_OFFSET)

    def write_desc(
        self,
        q: DriverQueue,
        idx: int,
        addr: int,
        length: int,
        flags: int,
        nxt: int,
        table: int | None = None,
    ) -> None:
        base = q.desc if table is None else table
        DESC.pack_into(self.ram, base + 16 * idx, addr, length, flags, nxt)

    def add_chain(
        self,
        qi: int,
        readable: list[tuple[int, int]],
        writable: list[tuple[int, int]],
        indirect: bool = False,
        publish: bool = True,
        table: int | None = None,
    ) -> int:
        """Write a chain of (gpa, len) buffers; returns its head index. An indirect chain's
        table is allocated, or written at `table` (a caller reusing its own space)."""
        q = self.queues[qi]
        bufs = [(a, n, 0) for a, n in readable] + [(a, n, DESC_F_WRITE) for a, n in writable]
        if indirect:
            if table is None:
                table = self.alloc(16 * len(bufs))
            for i, (a, n, f) in enumerate(bufs):
                last = i == len(bufs) - 1
                self.write_desc(q, i, a, n, f | (0 if last else DESC_F_NEXT), i + 1, table)
            head = self._take_desc(q)
            self.write_desc(q, head, table, 16 * len(bufs), DESC_F_INDIRECT, 0)
        else:
            idxs = [self._take_desc(q) for _ in bufs]
            head = idxs[0]
            for i, (a, n, f) in enumerate(bufs):
                last = i == len(bufs) - 1
                nxt = 0 if last else idxs[i + 1]
                self.write_desc(q, idxs[i], a, n, f | (0 if last else DESC_F_NEXT), nxt)
        if publish:
            self.publish(qi, head)
        return head

    def _take_desc(self, q: DriverQueue) -> int:
        idx = q.next_desc
        q.next_desc = (idx + 1) % q.size
        return idx

    def publish(self, qi: int, head: int, kick: bool = True) -> None:
        q = self.queues[qi]
        self._ram16[(q.avail + 4) // 2 + q.avail_idx % q.size] = head
        q.avail_idx = (q.avail_idx + 1) & 0xFFFF
        self._ram16[(q.avail + 2) // 2] = q.avail_idx
        if kick:
            self.kick(qi)

    def set_avail_idx(self, qi: int, value: int) -> None:
        q = self.queues[qi]
        q.avail_idx = value & 0xFFFF
        self._ram16[(q.avail + 2) // 2] = q.avail_idx

    def kick(self, qi: int) -> None:
        os.eventfd_write(self.queues[qi].kick, 1)

    def used_idx(self, qi: int) -> int:
        q = self.queues[qi]
        return self._ram16[(q.used + 2) // 2]

    def avail_event(self, qi: int) -> int:
        q = self.queues[qi]
        return self._ram16[(q.used + 4 + 8 * q.size) // 2]

    def set_used_event(self, qi: int, value: int) -> None:
        q = self.queues[qi]
        self._ram16[(q.avail + 4 + 2 * q.size) // 2] = value & 0xFFFF

    def wait_used(self, qi: int, count: int = 1, timeout: float = 10.0) -> list[tuple[int, int]]:
        """Wait for `count` new used elements on queue qi (polling the used index, so a
        device that forgets to interrupt is caught by the call-count checks, not here)."""
        q = self.queues[qi]
        deadline = time.monotonic() + timeout
        while ((self.used_idx(qi) - q.last_used) & 0xFFFF) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"queue {qi}: {count} completions did not arrive")
            select.select([q.call], [], [], 0.005)
        out = []
        for _ in range(count):
            slot = q.last_used % q.size
            out.append(USED_ELEM.unpack_from(self.ram, q.used + 4 + 8 * slot))
            q.last_used = (q.last_used + 1) & 0xFFFF
        return out

    def wait_call(self, qi: int, timeout: float = 10.0) -> bool:
        """Wait for an interrupt on qi (the device raises it just after the used index
        moves, so a test that saw the index must still wait for it)."""
        ready, _, _ = select.select([self.queues[qi].call], [], [], timeout)
        return bool(ready) and self.calls(qi) > 0

    def calls(self, qi: int) -> int:
        """How many interrupts the device raised on qi since the last look."""
        try:
            return os.eventfd_read(self.queues[qi].call)
        except BlockingIOError:
            return 0
