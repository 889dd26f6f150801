"""vhost-user wire format: message header, request codes, payload layouts, fd passing.

Everything here is pure framing: no device state. Layouts follow QEMU's
docs/interop/vhost-user.rst; all integers are little-endian (the protocol is host-endian and
we only run on x86-64 / little-endian hosts).
"""

from __future__ import annotations

import array
import contextlib
import enum
import os
import socket
import struct
from dataclasses import dataclass, field

HEADER = struct.Struct("<III")  # request, flags, payload size
U64 = struct.Struct("<Q")
VRING_STATE = struct.Struct("<II")  # index, num
VRING_ADDR = struct.Struct("<IIQQQQ")  # index, flags, desc, used, avail, log (QEMU user addresses)
MEM_REGION = struct.Struct("<QQQQ")  # guest_phys_addr, size, userspace_addr, mmap_offset
MEM_TABLE_HEAD = struct.Struct("<II")  # num_regions, padding

FLAG_VERSION = 0x1
FLAG_VERSION_MASK = 0x3
FLAG_REPLY = 0x4
FLAG_NEED_REPLY = 0x8

# Bounds for what a front-end may send us; anything larger is a broken peer, not a big request.
MAX_PAYLOAD = 4096
MAX_FDS = 32  # SET_MEM_TABLE carries at most 8; ADD_MEM_REG one
MAX_MEM_TABLE_REGIONS = 8

# SET_VRING_KICK/CALL/ERR payload: bits 0-7 queue index, bit 8 "no fd attached" (polling).
VRING_IDX_MASK = 0xFF
VRING_NOFD_MASK = 0x100


class Request(enum.IntEnum):
    GET_FEATURES = 1
    SET_FEATURES = 2
    SET_OWNER = 3
    RESET_OWNER = 4
    SET_MEM_TABLE = 5
    SET_LOG_BASE = 6
    SET_LOG_FD = 7
    SET_VRING_NUM = 8
    SET_VRING_ADDR = 9
    SET_VRING_BASE = 10
    GET_VRING_BASE = 11
    SET_VRING_KICK = 12
    SET_VRING_CALL = 13
    SET_VRING_ERR = 14
    GET_PROTOCOL_FEATURES = 15
    SET_PROTOCOL_FEATURES = 16
    GET_QUEUE_NUM = 17
    SET_VRING_ENABLE = 18
    SEND_RARP = 19
    NET_SET_MTU = 20
    SET_BACKEND_REQ_FD = 21
    IOTLB_MSG = 22
    SET_VRING_ENDIAN = 23
    GET_CONFIG = 24
    SET_CONFIG = 25
    CREATE_CRYPTO_SESSION = 26
    CLOSE_CRYPTO_SESSION = 27
    POSTCOPY_ADVISE = 28
    POSTCOPY_LISTEN = 29
    POSTCOPY_END = 30
    GET_INFLIGHT_FD = 31
    SET_INFLIGHT_FD = 32
    GPU_SET_SOCKET = 33
    RESET_DEVICE = 34
    VRING_KICK = 35
    GET_MAX_MEM_SLOTS = 36
    ADD_MEM_REG = 37
    REM_MEM_REG = 38
    SET_STATUS = 39
    GET_STATUS = 40


class ProtocolFeature(enum.IntEnum):
    MQ = 0
    LOG_SHMFD = 1
    RARP = 2
    REPLY_ACK = 3
    MTU = 4
    BACKEND_REQ = 5
    CROSS_ENDIAN = 6
    CRYPTO_SESSION = 7
    PAGEFAULT = 8
    CONFIG = 9
    BACKEND_SEND_FD = 10
    HOST_NOTIFIER = 11
    INFLIGHT_SHMFD = 12
    RESET_DEVICE = 13
    INBAND_NOTIFICATIONS = 14
    CONFIGURE_MEM_SLOTS = 15
    STATUS = 16


# Virtio feature bits (virtio spec 1.1 section 6 plus the vhost-user bit).
VIRTIO_RING_F_INDIRECT_DESC = 28
VIRTIO_RING_F_EVENT_IDX = 29
VHOST_USER_F_PROTOCOL_FEATURES = 30
VIRTIO_F_VERSION_1 = 32


class ProtocolError(Exception):
    """The front-end broke the vhost-user protocol; the connection must be dropped."""


@dataclass
class Message:
    request: int
    flags: int
    payload: bytes
    fds: list[int] = field(default_factory=list)

    @property
    def need_reply(self) -> bool:
        return bool(self.flags & FLAG_NEED_REPLY)

    def close_fds(self) -> None:
        """Close every fd the message carried that nobody took ownership of."""
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds.clear()

    def take_fd(self) -> int | None:
        """Take ownership of the first fd; the rest stay for close_fds()."""
        return self.fds.pop(0) if self.fds else None


def _fds_from_ancillary(ancdata: list[tuple[int, int, bytes]], fds: list[int]) -> None:
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(data) - len(data) % 4
            fds.extend(array.array("i", data[:usable]))


def _recv_exact(sock: socket.socket, size: int, fds: list[int]) -> bytes | None:
    """Read exactly size bytes, collecting any fds that arrive with them. None on EOF."""
    chunks: list[bytes] = []
    remaining = size
    anc_space = socket.CMSG_SPACE(MAX_FDS * 4)
    while remaining:
        data, ancdata, msg_flags, _ = sock.recvmsg(remaining, anc_space, socket.MSG_CMSG_CLOEXEC)
        _fds_from_ancillary(ancdata, fds)
        if msg_flags & socket.MSG_CTRUNC:
            raise ProtocolError("too many file descriptors in one message")
        if not data:
            return None
        chunks.append(data)
        remaining -= len(data)
    return b"".join(chunks)


def recv_message(sock: socket.socket) -> Message | None:
    """Receive one message and its fds; None when the peer closed the connection."""
    fds: list[int] = []
    try:
        header = _recv_exact(sock, HEADER.size, fds)
        if header is None:
            return None
        request, flags, size = HEADER.unpack(header)
        if flags & FLAG_VERSION_MASK != FLAG_VERSION:
            raise ProtocolError(f"unsupported vhost-user version in flags {flags:#x}")
        if size > MAX_PAYLOAD:
            raise ProtocolError(f"payload of {size} bytes for request {request} is too large")
        payload = _recv_exact(sock, size, fds) if size else b""
        if payload is None:
            return None
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return Message(request, flags, payload, fds)


def send_reply(sock: socket.socket, request: int, payload: bytes) -> None:
    sock.sendall(HEADER.pack(request, FLAG_VERSION | FLAG_REPLY, len(payload)) + payload)


def send_message(
    sock: socket.socket,
    request: int,
    payload: bytes = b"",
    fds: list[int] | None = None,
    flags: int = 0,
) -> None:
    """Send a front-end → back-end message (used by test drivers acting as QEMU)."""
    data = HEADER.pack(request, FLAG_VERSION | flags, len(payload)) + payload
    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    sent = sock.sendmsg([data], anc)
    if sent < len(data):
        sock.sendall(data[sent:])


@dataclass(frozen=True)
class RegionDescription:
    guest_addr: int
    size: int
    user_addr: int
    mmap_offset: int


def parse_mem_table(payload: bytes) -> list[RegionDescription]:
    if len(payload) < MEM_TABLE_HEAD.size:
        raise ProtocolError("SET_MEM_TABLE payload too short")
    count, _ = MEM_TABLE_HEAD.unpack_from(payload)
    if (
        count > MAX_MEM_TABLE_REGIONS
        or len(payload) < MEM_TABLE_HEAD.size + count * MEM_REGION.size
    ):
        raise ProtocolError(f"SET_MEM_TABLE with {count} regions does not fit its payload")
    return [
        RegionDescription(
            *MEM_REGION.unpack_from(payload, MEM_TABLE_HEAD.size + i * MEM_REGION.size)
        )
        for i in range(count)
    ]


def parse_single_region(payload: bytes) -> RegionDescription:
    # ADD_MEM_REG / REM_MEM_REG: 8 bytes of padding, then one region description.
    if len(payload) < 8 + MEM_REGION.size:
        raise ProtocolError("memory region payload too short")
    return RegionDescription(*MEM_REGION.unpack_from(payload, 8))


def pack_mem_table(regions: list[RegionDescription]) -> bytes:
    out = MEM_TABLE_HEAD.pack(len(regions), 0)
    for r in regions:
        out += MEM_REGION.pack(r.guest_addr, r.size, r.user_addr, r.mmap_offset)
    return out


def pack_single_region(region: RegionDescription) -> bytes:
    return U64.pack(0) + MEM_REGION.pack(
        region.guest_addr, region.size, region.user_addr, region.mmap_offset
    )


def parse_u64(payload: bytes, what: str) -> int:
    if len(payload) < U64.size:
        raise ProtocolError(f"{what} payload too short")
    return U64.unpack_from(payload)[0]


def parse_vring_state(payload: bytes, what: str) -> tuple[int, int]:
    if len(payload) < VRING_STATE.size:
        raise ProtocolError(f"{what} payload too short")
    return VRING_STATE.unpack_from(payload)


def parse_vring_addr(payload: bytes) -> tuple[int, int, int, int, int, int]:
    if len(payload) < VRING_ADDR.size:
        raise ProtocolError("SET_VRING_ADDR payload too short")
    return VRING_ADDR.unpack_from(payload)


def request_name(code: int) -> str:
    try:
        return Request(code).name
    except ValueError:
        return f"request#{code}"
