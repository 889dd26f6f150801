"""The vhost-user-fs device: answers the front-end's vhost-user messages and runs the queues.

Queue 0 is hiprio, queues 1..N are request queues (virtio spec, "File System Device"). The
device knows nothing of filesystems: it hands each chain's buffers to a FuseHandler.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable

from vfsframe.virtio import protocol as p
from vfsframe.virtio.dispatch import FuseHandler, QueueService
from vfsframe.virtio.memory import GuestMemory, GuestMemoryError, MemoryRegion, map_regions
from vfsframe.virtio.protocol import Message, ProtocolError, ProtocolFeature, Request
from vfsframe.virtio.stallwatch import StallWatch
from vfsframe.virtio.virtqueue import VirtQueue

log = logging.getLogger(__name__)

VIRTIO_FEATURES = (
    1 << p.VIRTIO_F_VERSION_1
    | 1 << p.VIRTIO_RING_F_INDIRECT_DESC
    | 1 << p.VIRTIO_RING_F_EVENT_IDX
    | 1 << p.VHOST_USER_F_PROTOCOL_FEATURES
)
# Never CONFIG: QEMU builds the fs config space itself, and 7.1-8.0 abort when it is offered.
PROTOCOL_FEATURES = (
    1 << ProtocolFeature.MQ
    | 1 << ProtocolFeature.REPLY_ACK
    | 1 << ProtocolFeature.CONFIGURE_MEM_SLOTS
)
MAX_MEM_SLOTS = 32
MAX_QUEUES = 1 + 64  # hiprio + request queues; bounds what a front-end can make us allocate

# Requests that by definition carry a reply; refusing one we do not implement must close the
# connection, because the front-end would otherwise wait for an answer forever.
_REPLY_EXPECTED = {
    Request.GET_CONFIG,
    Request.GET_INFLIGHT_FD,
    Request.GET_STATUS,
    Request.IOTLB_MSG,
    Request.POSTCOPY_ADVISE,
    Request.CREATE_CRYPTO_SESSION,
}


class VhostUserFsDevice:
    """One share's device. serve(sock) handles one front-end connection at a time; when it
    ends, the device and the FUSE session are reset, ready for the next connection."""

    def __init__(
        self,
        handler: FuseHandler,
        request_queues: int = 1,
        workers: int = 8,
        name: str = "vfsframe",
    ) -> None:
        if request_queues < 1:
            raise ValueError("a virtio-fs device needs at least one request queue")
        self.handler = handler
        self.name = name
        self.num_queues = 1 + request_queues
        self.workers = max(1, workers)
        self.queues = [VirtQueue(i) for i in range(self.num_queues)]
        self.services: dict[int, QueueService] = {}
        self.stall_watch: StallWatch | None = None  # started with the first request queue
        self.memory = GuestMemory()
        self.features = 0
        self.protocol_features = 0
        self.served: list[int] = [0] * self.num_queues
        self._handlers: dict[int, Callable[[Message], bytes | None]] = {
            Request.GET_FEATURES: self._get_features,
            Request.SET_FEATURES: self._set_features,
            Request.GET_PROTOCOL_FEATURES: self._get_protocol_features,
            Request.SET_PROTOCOL_FEATURES: self._set_protocol_features,
            Request.SET_OWNER: lambda m: None,
            Request.RESET_OWNER: self._reset_owner,
            Request.GET_QUEUE_NUM: lambda m: p.U64.pack(self.num_queues),
            Request.GET_MAX_MEM_SLOTS: lambda m: p.U64.pack(MAX_MEM_SLOTS),
            Request.SET_MEM_TABLE: self._set_mem_table,
            Request.ADD_MEM_REG: self._add_mem_reg,
            Request.REM_MEM_REG: self._rem_mem_reg,
            Request.SET_VRING_NUM: self._set_vring_num,
            Request.SET_VRING_ADDR: self._set_vring_addr,
            Request.SET_VRING_BASE: self._set_vring_base,
            Request.GET_VRING_BASE: self._get_vring_base,
            Request.SET_VRING_KICK: self._set_vring_kick,
            Request.SET_VRING_CALL: self._set_vring_call,
            Request.SET_VRING_ERR: self._set_vring_err,
            Request.SET_VRING_ENABLE: self._set_vring_enable,
        }
        # Requests whose answer is a reply message of their own (never a REPLY_ACK).
        self._replying = {
            Request.GET_FEATURES,
            Request.GET_PROTOCOL_FEATURES,
            Request.GET_QUEUE_NUM,
            Request.GET_MAX_MEM_SLOTS,
            Request.GET_VRING_BASE,
        }

    # -- connection ----------------------------------------------------------------------

    def serve(self, sock: socket.socket) -> None:
        """Serve one front-end connection until it closes or breaks the protocol."""
        try:
            while (msg := p.recv_message(sock)) is not None:
                try:
                    self.handle_message(sock, msg)
                finally:
                    msg.close_fds()
        except ProtocolError as exc:
            log.error("%s: front-end broke the vhost-user protocol: %s", self.name, exc)
        except OSError as exc:
            log.info("%s: connection error: %s", self.name, exc)
        finally:
            self.reset()

    def handle_message(self, sock: socket.socket, msg: Message) -> None:
        name = p.request_name(msg.request)
        handler = self._handlers.get(msg.request)
        if handler is None:
            if msg.request in _REPLY_EXPECTED:
                raise ProtocolError(f"{name} is not supported and needs a reply")
            log.warning("%s: refusing unsupported vhost-user request %s", self.name, name)
            self._ack(sock, msg, ok=False)
            return
        log.debug("%s: %s (%d bytes, %d fds)", self.name, name, len(msg.payload), len(msg.fds))
        try:
            reply = handler(msg)
        except (ValueError, GuestMemoryError) as exc:
            if msg.request in self._replying:
                raise ProtocolError(f"{name}: {exc}") from exc
            log.error("%s: %s refused: %s", self.name, name, exc)
            self._ack(sock, msg, ok=False)
            return
        if msg.request in self._replying:
            p.send_reply(sock, msg.request, reply or b"")
        else:
            self._ack(sock, msg, ok=True)

    def _ack(self, sock: socket.socket, msg: Message, ok: bool) -> None:
        if msg.need_reply and self.protocol_features & (1 << ProtocolFeature.REPLY_ACK):
            p.send_reply(sock, msg.request, p.U64.pack(0 if ok else 1))

    def reset(self) -> None:
        """Forget the front-end: stop every queue, unmap memory, reset the FUSE session."""
        try:
            self.handler.abort_waits()  # a thread blocked in SETLKW would hold up the stop
        except Exception:
            log.exception("%s: aborting waiting requests failed", self.name)
        for index in list(self.services):
            self._stop_queue(index)
        if self.stall_watch is not None:
            self.stall_watch.stop()
            self.stall_watch = None
        for vq in self.queues:
            for fd in (vq.kick_fd, vq.call_fd, vq.err_fd):
                if fd is not None:
                    os.close(fd)
        self.queues = [VirtQueue(i) for i in range(self.num_queues)]
        try:
            self.handler.reset()
        except Exception:
            log.exception("%s: session reset failed", self.name)
        self.memory.close()
        self.memory = GuestMemory()
        self.features = 0
        self.protocol_features = 0

    # -- features ------------------------------------------------------------------------

    def _get_features(self, msg: Message) -> bytes:
        return p.U64.pack(VIRTIO_FEATURES)

    def _set_features(self, msg: Message) -> None:
        features = p.parse_u64(msg.payload, "SET_FEATURES")
        if features & ~VIRTIO_FEATURES:
            raise ValueError(f"features {features & ~VIRTIO_FEATURES:#x} were never offered")
        self.features = features
        for vq in self.queues:
            self._apply_features(vq)

    def _apply_features(self, vq: VirtQueue) -> None:
        vq.event_idx = bool(self.features & (1 << p.VIRTIO_RING_F_EVENT_IDX))
        vq.indirect = bool(self.features & (1 << p.VIRTIO_RING_F_INDIRECT_DESC))

    def _get_protocol_features(self, msg: Message) -> bytes:
        return p.U64.pack(PROTOCOL_FEATURES)

    def _set_protocol_features(self, msg: Message) -> None:
        features = p.parse_u64(msg.payload, "SET_PROTOCOL_FEATURES")
        if features & ~PROTOCOL_FEATURES:
            raise ValueError(f"protocol features {features & ~PROTOCOL_FEATURES:#x} never offered")
        self.protocol_features = features

    def _reset_owner(self, msg: Message) -> None:
        self.reset()

    # -- memory --------------------------------------------------------------------------

    def _set_mem_table(self, msg: Message) -> None:
        descs = p.parse_mem_table(msg.payload)
        regions = map_regions(descs, msg.fds)
        self._replace_memory(GuestMemory(regions), closing=self.memory.regions)

    def _add_mem_reg(self, msg: Message) -> None:
        desc = p.parse_single_region(msg.payload)
        (region,) = map_regions([desc], msg.fds[:1])
        del msg.fds[:1]
        try:
            memory = self.memory.with_region(region)
        except GuestMemoryError:
            region.close()
            raise
        self._replace_memory(memory, closing=())

    def _rem_mem_reg(self, msg: Message) -> None:
        desc = p.parse_single_region(msg.payload)
        memory, region = self.memory.without_region(desc)
        if region is None:
            raise ValueError(f"no memory region at {desc.guest_addr:#x} of {desc.size:#x} bytes")
        self._replace_memory(memory, closing=(region,))

    def _replace_memory(self, memory: GuestMemory, closing: tuple[MemoryRegion, ...]) -> None:
        # Running queues are stopped (in-flight requests finish against the old table) and
        # restarted against the new one, re-translating their ring addresses.
        running = list(self.services)
        for index in running:
            self._stop_queue(index)
        self.memory = memory
        for region in closing:
            region.close()
        for index in running:
            self._maybe_start(self.queues[index])

    # -- vrings --------------------------------------------------------------------------

    def _queue(self, index: int) -> VirtQueue:
        if not 0 <= index < MAX_QUEUES:
            raise ValueError(f"queue index {index} (a device has at most {MAX_QUEUES} queues)")
        if index >= len(self.queues):
            # QEMU does not hold vhost-user-fs to GET_QUEUE_NUM: with more num-request-queues
            # than configured it sets them up anyway, and a guest using an unserved queue
            # hangs. Serving them is the useful answer; the warning says how to fix the config.
            log.warning(
                "%s: the front-end uses request queue %d but the share has request_queues = "
                "%d; serving it anyway (set request_queues to match QEMU's num-request-queues)",
                self.name, index, self.num_queues - 1,
            )  # fmt: skip
            while len(self.queues) <= index:
                vq = VirtQueue(len(self.queues))
                self._apply_features(vq)
                self.queues.append(vq)
                self.served.append(0)
        return self.queues[index]

    def _set_vring_num(self, msg: Message) -> None:
        index, num = p.parse_vring_state(msg.payload, "SET_VRING_NUM")
        self._queue(index).set_size(num)

    def _set_vring_addr(self, msg: Message) -> None:
        index, _flags, desc, used, avail, _log = p.parse_vring_addr(msg.payload)
        vq = self._queue(index)
        vq.set_addresses(desc, avail, used)
        if index in self.services:  # new addresses for a running ring: re-translate
            self._stop_queue(index)
            self._maybe_start(vq)

    def _set_vring_base(self, msg: Message) -> None:
        index, num = p.parse_vring_state(msg.payload, "SET_VRING_BASE")
        if num > 0xFFFF:
            raise ValueError(f"queue {index}: base index {num} does not fit 16 bits")
        self._queue(index).last_avail = num

    def _get_vring_base(self, msg: Message) -> bytes:
        index, _ = p.parse_vring_state(msg.payload, "GET_VRING_BASE")
        vq = self._queue(index)
        self._stop_queue(index)
        if vq.kick_fd is not None:
            os.close(vq.kick_fd)
            vq.kick_fd = None
        vq.polling = False
        return p.VRING_STATE.pack(index, vq.last_avail)

    def _vring_fd(self, msg: Message, what: str) -> tuple[VirtQueue, int | None]:
        value = p.parse_u64(msg.payload, what)
        vq = self._queue(value & p.VRING_IDX_MASK)
        if value & p.VRING_NOFD_MASK:
            return vq, None
        fd = msg.take_fd()
        if fd is None:
            raise ValueError(f"{what} for queue {vq.index} without a file descriptor")
        return vq, fd

    def _set_vring_kick(self, msg: Message) -> None:
        vq, fd = self._vring_fd(msg, "SET_VRING_KICK")
        self._stop_queue(vq.index)
        if vq.kick_fd is not None:
            os.close(vq.kick_fd)
        vq.kick_fd = fd
        vq.polling = fd is None  # no fd: the front-end wants us to poll the ring
        self._maybe_start(vq)

    def _set_vring_call(self, msg: Message) -> None:
        vq, fd = self._vring_fd(msg, "SET_VRING_CALL")
        old, vq.call_fd = vq.call_fd, fd
        if old is not None:
            os.close(old)

    def _set_vring_err(self, msg: Message) -> None:
        vq, fd = self._vring_fd(msg, "SET_VRING_ERR")
        old, vq.err_fd = vq.err_fd, fd
        if old is not None:
            os.close(old)

    def _set_vring_enable(self, msg: Message) -> None:
        index, enable = p.parse_vring_state(msg.payload, "SET_VRING_ENABLE")
        vq = self._queue(index)
        vq.enabled = bool(enable)
        if vq.enabled:
            self._maybe_start(vq)
        else:
            self._stop_queue(index)

    def _maybe_start(self, vq: VirtQueue) -> None:
        """Start serving vq once it has everything: size, addresses, memory, a kick (fd or
        polling). Like the C virtiofsd, a ring counts as enabled until it is explicitly
        disabled, so front-ends that never send SET_VRING_ENABLE still work."""
        if vq.index in self.services or not vq.enabled or not vq.size or not vq.addresses_set:
            return
        if vq.kick_fd is None and not vq.polling:
            return
        if not len(self.memory):
            return
        self._apply_features(vq)
        vq.attach(self.memory)
        name = f"{self.name}-q{vq.index}"
        if vq.index == 0:  # hiprio: cheap, in order, one thread
            service = QueueService(vq, self.handler, 1, name)
        else:
            service = QueueService(vq, self.handler, self.workers, name, self._watch())
        self.services[vq.index] = service
        service.start()
        log.debug("%s: queue %d started (size %d)", self.name, vq.index, vq.size)

    def _watch(self) -> StallWatch:
        if self.stall_watch is None:
            self.stall_watch = StallWatch(self.name)
        return self.stall_watch

    def _stop_queue(self, index: int) -> None:
        service = self.services.pop(index, None)
        if service is None:
            return
        service.stop()
        self.served[index] += service.served
        service.vq.detach()
        log.debug("%s: queue %d stopped at avail index %d", self.name, index, service.vq.last_avail)
