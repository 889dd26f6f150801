"""The device driven end to end through vhost-user messages and rings in a memfd."""

from __future__ import annotations

import errno
import logging
import os
import time

import pytest

from vfsframe.testing.virtio_driver import REGIONS, MiB, TestFrontEnd
from vfsframe.virtio import protocol as p
from vfsframe.virtio.device import PROTOCOL_FEATURES, VIRTIO_FEATURES

from .stub_session import IN_HEADER, OP_FORGET, OP_SLOW, OUT_HEADER, StubSession, in_request

OP_GETATTR = 3

pytestmark = pytest.mark.usefixtures("ring_implementation")


def roundtrip(
    fe: TestFrontEnd,
    qi: int,
    opcode: int,
    unique: int,
    body: bytes = b"",
    reply_size: int = 4096,
    indirect: bool = False,
) -> tuple[int, bytes]:
    req = in_request(opcode, unique, body)
    rd = fe.alloc(len(req), req)
    wr = fe.alloc(reply_size)
    head = fe.add_chain(qi, [(rd, len(req))], [(wr, reply_size)], indirect=indirect)
    ((used_id, used_len),) = fe.wait_used(qi)
    assert used_id == head
    return used_len, fe.read(wr, used_len)


def test_feature_negotiation(make_frontend) -> None:
    fe = make_frontend(request_queues=3)
    assert fe.get_u64(p.Request.GET_FEATURES) == VIRTIO_FEATURES
    pf = fe.get_u64(p.Request.GET_PROTOCOL_FEATURES)
    assert pf == PROTOCOL_FEATURES
    assert not pf & (1 << p.ProtocolFeature.CONFIG), "QEMU 7.2 aborts on CONFIG"
    for needed in (
        p.ProtocolFeature.MQ,
        p.ProtocolFeature.REPLY_ACK,
        p.ProtocolFeature.CONFIGURE_MEM_SLOTS,
    ):
        assert pf & (1 << needed)
    fe.send(p.Request.SET_PROTOCOL_FEATURES, p.U64.pack(pf))
    assert fe.get_u64(p.Request.GET_QUEUE_NUM) == 4
    assert fe.get_u64(p.Request.GET_MAX_MEM_SLOTS) >= 8
    # Features never offered are refused (acked with a failure, not applied).
    assert fe.call(p.Request.SET_FEATURES, p.U64.pack(1 << 40)) != 0
    assert fe.call(p.Request.SET_FEATURES, p.U64.pack(VIRTIO_FEATURES)) == 0


def test_request_roundtrip_split_buffers_across_regions(make_frontend, session) -> None:
    fe = make_frontend()
    fe.start()
    body = bytes(range(256)) * 8
    req = in_request(OP_GETATTR, 77, body)
    # The request is split over two descriptors, the second straddling the region boundary
    # at 2 MiB (guest-contiguous, not contiguous in the device's mappings).
    boundary = REGIONS[1].guest_addr
    first = fe.alloc(40, req[:40])
    second = fe.alloc(len(req) - 40, req[40:], at=boundary - 1000)
    reply_a = fe.alloc(24)
    reply_b = fe.alloc(4096, at=boundary + 64 * 1024)
    head = fe.add_chain(1, [(first, 40), (second, len(req) - 40)], [(reply_a, 24), (reply_b, 4096)])
    ((used_id, used_len),) = fe.wait_used(1)
    assert used_id == head
    assert used_len == OUT_HEADER.size + len(body)  # the real used length
    out = fe.read(reply_a, 24) + fe.read(reply_b, used_len - 24)
    assert OUT_HEADER.unpack_from(out) == (used_len, 0, 77)
    assert out[OUT_HEADER.size :] == body[::-1]
    assert session.requests == [(OP_GETATTR, 77, body)]
    assert fe.guard_intact()


def test_indirect_chain(make_frontend) -> None:
    fe = make_frontend()
    fe.start()
    used_len, out = roundtrip(fe, 1, OP_GETATTR, 5, b"abc", indirect=True)
    assert used_len == 19
    assert out[16:] == b"cba"


def test_many_requests_wrap_the_ring(make_frontend) -> None:
    fe = make_frontend(queue_size=16)
    fe.start()
    for i in range(70):  # several laps of a 16-entry ring, past u16 arithmetic edge cases
        _used_len, out = roundtrip(fe, 1, OP_GETATTR, 1000 + i, b"x" * (i % 7))
        assert OUT_HEADER.unpack_from(out)[2] == 1000 + i


def test_ring_base_is_honoured_across_u16_wrap(make_frontend) -> None:
    fe = make_frontend(queue_size=16)
    fe.negotiate()
    fe.set_mem_table()
    fe.setup_queue(0)
    fe.setup_queue(1, base=0xFFFE)
    for i in range(5):
        used_len, _ = roundtrip(fe, 1, OP_GETATTR, i, b"z")
        assert used_len == 17
    assert fe.get_vring_base(1) == (0xFFFE + 5) & 0xFFFF


def test_forget_on_hiprio_gets_used_length_zero(make_frontend, session) -> None:
    fe = make_frontend()
    fe.start()
    req = in_request(OP_FORGET, 9, b"\0" * 8)
    rd = fe.alloc(len(req), req)
    head = fe.add_chain(0, [(rd, len(req))], [])
    assert fe.wait_used(0) == [(head, 0)]
    assert session.requests[0][0] == OP_FORGET


def test_event_idx_interrupt_suppression(make_frontend) -> None:
    fe = make_frontend()
    fe.start()
    roundtrip(fe, 1, OP_GETATTR, 1)
    assert fe.wait_call(1)
    # used_event = 5: the driver wants an interrupt only once the used index passes 5.
    fe.set_used_event(1, 5)
    for i in range(3):
        roundtrip(fe, 1, OP_GETATTR, 10 + i)  # used index goes 2, 3, 4
    assert not fe.wait_call(1, timeout=0.2)
    roundtrip(fe, 1, OP_GETATTR, 20)  # 5
    assert not fe.wait_call(1, timeout=0.2)
    roundtrip(fe, 1, OP_GETATTR, 21)  # 6: crossed used_event
    assert fe.wait_call(1)
    # Once idle, the device publishes avail_event: the kick it wants is the next request's.
    # (While it drains the ring it leaves avail_event behind, so the driver does not kick.)
    deadline = time.monotonic() + 10
    while fe.avail_event(1) != fe.queues[1].avail_idx and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fe.avail_event(1) == fe.queues[1].avail_idx


def test_no_event_idx_honours_no_interrupt_flag(make_frontend) -> None:
    fe = make_frontend()
    fe.negotiate(features=VIRTIO_FEATURES & ~(1 << p.VIRTIO_RING_F_EVENT_IDX))
    fe.set_mem_table()
    fe.setup_queue(0)
    fe.setup_queue(1)
    roundtrip(fe, 1, OP_GETATTR, 1)
    assert fe.wait_call(1)
    q = fe.queues[1]
    fe.ram[q.avail] = 1  # VRING_AVAIL_F_NO_INTERRUPT
    roundtrip(fe, 1, OP_GETATTR, 2)
    assert not fe.wait_call(1, timeout=0.2)


def test_out_of_order_completion_and_hiprio_not_blocked(make_frontend, session) -> None:
    fe = make_frontend(workers=2)
    fe.start()
    slow_req = in_request(OP_SLOW, 1)
    slow_rd = fe.alloc(len(slow_req), slow_req)
    slow_wr = fe.alloc(64)
    slow_heads = []
    for _ in range(2):  # occupy every worker
        slow_heads.append(fe.add_chain(1, [(slow_rd, len(slow_req))], [(slow_wr, 64)]))
        assert session.slow_started.acquire(timeout=10)
    # Hiprio is served while every request worker is stuck.
    req = in_request(OP_FORGET, 2, b"\0" * 8)
    rd = fe.alloc(len(req), req)
    head = fe.add_chain(0, [(rd, len(req))], [])
    assert fe.wait_used(0) == [(head, 0)]
    # A fast request queued behind the slow ones on the same queue completes once a worker
    # frees up, and its completion is written before the others: out of order.
    session.release_slow.set()
    done = fe.wait_used(1, 2)
    assert sorted(d[0] for d in done) == sorted(slow_heads)
    _used_len, out = roundtrip(fe, 1, OP_GETATTR, 3, b"q")
    assert OUT_HEADER.unpack_from(out)[2] == 3


def test_out_of_order_used_ring(make_frontend, session) -> None:
    fe = make_frontend(workers=4)
    fe.start()
    slow_req = in_request(OP_SLOW, 1)
    slow_rd = fe.alloc(len(slow_req), slow_req)
    slow_wr = fe.alloc(64)
    slow_head = fe.add_chain(1, [(slow_rd, len(slow_req))], [(slow_wr, 64)])
    assert session.slow_started.acquire(timeout=10)
    req = in_request(OP_GETATTR, 2, b"fast")
    rd = fe.alloc(len(req), req)
    wr = fe.alloc(64)
    fast_head = fe.add_chain(1, [(rd, len(req))], [(wr, 64)])
    (first,) = fe.wait_used(1)
    assert first[0] == fast_head  # the later request completed first
    session.release_slow.set()
    (second,) = fe.wait_used(1)
    assert second[0] == slow_head


def test_multiple_request_queues_are_served(make_frontend, session) -> None:
    fe = make_frontend(request_queues=3)
    fe.start(request_queues=3)
    for qi in (1, 2, 3):
        _used_len, out = roundtrip(fe, qi, OP_GETATTR, 100 + qi, b"m")
        assert OUT_HEADER.unpack_from(out)[2] == 100 + qi


def test_get_vring_base_stops_ring_and_restart_continues(make_frontend) -> None:
    fe = make_frontend()
    fe.start()
    roundtrip(fe, 1, OP_GETATTR, 1)
    roundtrip(fe, 1, OP_GETATTR, 2)
    assert fe.get_vring_base(1) == 2
    # Stopped: a new request is not served.
    req = in_request(OP_GETATTR, 3)
    rd = fe.alloc(len(req), req)
    wr = fe.alloc(64)
    fe.add_chain(1, [(rd, len(req))], [(wr, 64)])
    try:
        fe.wait_used(1, timeout=0.3)
        raise AssertionError("a stopped ring was served")
    except TimeoutError:
        pass
    # Restarted with a new kick fd at the base QEMU got back: the pending request is served.
    os.close(fe.queues[1].kick)
    kick = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
    fe.queues[1].kick = kick
    fe.send(p.Request.SET_VRING_BASE, p.VRING_STATE.pack(1, 2))
    fe.send(p.Request.SET_VRING_KICK, p.U64.pack(1), [kick])
    fe.kick(1)
    (used,) = fe.wait_used(1)
    assert used[1] == 16


def test_add_and_remove_memory_regions(make_frontend) -> None:
    fe = make_frontend()
    fe.negotiate()
    for region in REGIONS:
        fd = os.dup(fe.memfd)
        try:
            assert fe.call(p.Request.ADD_MEM_REG, p.pack_single_region(region), [fd]) == 0
        finally:
            os.close(fd)
    fe.setup_queue(0)
    fe.setup_queue(1)
    roundtrip(fe, 1, OP_GETATTR, 1)
    # Drop the upper region: buffers there now fail, the rings (low region) keep working.
    assert fe.call(p.Request.REM_MEM_REG, p.pack_single_region(REGIONS[1])) == 0
    req = in_request(OP_GETATTR, 2)
    rd = fe.alloc(len(req), req)
    wr = fe.alloc(64, at=REGIONS[1].guest_addr + 4096)
    fe.add_chain(1, [(rd, len(req))], [(wr, 64)])
    assert fe.wait_used(1)[0][1] == 0
    # Removing a region that is not there is refused.
    assert fe.call(p.Request.REM_MEM_REG, p.pack_single_region(REGIONS[1])) != 0
    assert fe.guard_intact()


def test_overlapping_region_is_refused(make_frontend) -> None:
    fe = make_frontend()
    fe.negotiate()
    fd = os.dup(fe.memfd)
    assert fe.call(p.Request.ADD_MEM_REG, p.pack_single_region(REGIONS[0]), [fd]) == 0
    os.close(fd)
    overlap = p.RegionDescription(MiB, 2 * MiB, 0x1234_0000_0000, 0)
    fd = os.dup(fe.memfd)
    assert fe.call(p.Request.ADD_MEM_REG, p.pack_single_region(overlap), [fd]) != 0
    os.close(fd)


def test_region_beyond_memfd_end_is_refused(make_frontend) -> None:
    fe = make_frontend()
    fe.negotiate()
    too_big = (p.RegionDescription(0, 64 * MiB, 0x1000_0000, 0),)
    assert fe.set_mem_table(too_big) != 0


def test_unsupported_request_is_refused_and_connection_survives(make_frontend, caplog) -> None:
    fe = make_frontend()
    fe.negotiate()
    with caplog.at_level(logging.WARNING):
        assert fe.call(p.Request.SET_VRING_ENDIAN, p.VRING_STATE.pack(0, 0)) != 0
    assert "SET_VRING_ENDIAN" in caplog.text
    assert fe.get_u64(p.Request.GET_QUEUE_NUM) == 2


def test_request_needing_unsupported_reply_closes_connection(make_frontend) -> None:
    fe = make_frontend()
    fe.negotiate()
    fe.send(p.Request.GET_CONFIG, bytes(12))
    fe.sock.settimeout(10)
    assert p.recv_message(fe.sock) is None


def test_more_request_queues_than_configured_are_served(make_frontend, caplog) -> None:
    # QEMU sets up num-request-queues whatever GET_QUEUE_NUM said; an unserved queue would
    # hang the guest, so the device serves it and warns.
    fe = make_frontend(request_queues=1)
    caplog.set_level(logging.WARNING)
    fe.start(request_queues=3)
    _, out = roundtrip(fe, 3, OP_GETATTR, 33, b"q3")
    assert OUT_HEADER.unpack_from(out)[2] == 33 and out[16:] == b"3q"
    assert "request_queues" in caplog.text


def test_bad_queue_index_is_refused(make_frontend) -> None:
    fe = make_frontend()
    fe.negotiate()
    assert fe.call(p.Request.SET_VRING_NUM, p.VRING_STATE.pack(1000, 64)) != 0
    assert fe.call(p.Request.SET_VRING_NUM, p.VRING_STATE.pack(1, 100)) != 0  # not 2^n
    assert fe.call(p.Request.SET_VRING_NUM, p.VRING_STATE.pack(1, 64)) == 0


def test_disconnect_resets_session_and_device_serves_again(session: StubSession) -> None:
    from vfsframe.virtio.device import VhostUserFsDevice

    device = VhostUserFsDevice(session, request_queues=1, workers=2, name="test")
    fe = TestFrontEnd(device)
    fe.start()
    roundtrip(fe, 1, OP_GETATTR, 1)
    fe.close()
    assert session.resets == 1
    assert not device.services and not len(device.memory)
    fe2 = TestFrontEnd(device)
    try:
        fe2.start()
        _used_len, out = roundtrip(fe2, 1, OP_GETATTR, 2, b"again")
        assert out[16:] == b"niaga"
    finally:
        fe2.close()
    assert session.resets == 2


def test_request_error_from_session_gets_eio(make_frontend, session, caplog) -> None:
    def boom(request, reply):
        raise RuntimeError("backend bug")

    session.handle = boom
    fe = make_frontend()
    fe.start()
    with caplog.at_level(logging.ERROR):
        _used_len, out = roundtrip(fe, 1, OP_GETATTR, 42)
    assert OUT_HEADER.unpack_from(out) == (16, -errno.EIO, 42)
    assert "backend bug" in caplog.text


def test_get_vring_base_waits_for_requests_in_flight(make_frontend, session) -> None:
    import threading

    fe = make_frontend(workers=2)
    fe.start()
    slow = in_request(OP_SLOW, 1)
    rd = fe.alloc(len(slow), slow)
    wr = fe.alloc(64)
    fe.add_chain(1, [(rd, len(slow))], [(wr, 64)])
    assert session.slow_started.acquire(timeout=10)
    base: list[int] = []
    asker = threading.Thread(target=lambda: base.append(fe.get_vring_base(1)))
    asker.start()
    asker.join(0.3)
    assert asker.is_alive(), "GET_VRING_BASE answered while a request was still in flight"
    session.release_slow.set()
    asker.join(10)
    # The answer came after the completion: the used ring is consistent with the base.
    assert base == [1]
    assert fe.used_idx(1) == 1


def test_buffers_next_to_each_other_become_one_view(make_frontend, session) -> None:
    # Adjacent pages (as a guest's page cache often gives them) are handed to the session as
    # one view; a gap starts another. The bytes are the same either way.
    fe = make_frontend(queue_size=256)
    fe.start()
    seen: list[list[int]] = []
    handle = session.handle

    def record(request, reply):
        seen.append([len(v) for v in request])
        return handle(request, reply)

    session.handle = record
    req = in_request(OP_GETATTR, 5, bytes(range(256)) * 48)  # 12 KiB of body
    base = (fe.alloc(32 * 1024) + 4095) & ~4095
    pieces = [req[:4096], req[4096:8192], req[8192:]]
    at = [base, base + 4096, base + 3 * 4096]  # the third leaves a gap
    for addr, piece in zip(at, pieces, strict=True):
        fe.alloc(len(piece), piece, at=addr)
    wr = fe.alloc(16 * 1024)
    readable = [(a, len(p)) for a, p in zip(at, pieces, strict=True)]
    head = fe.add_chain(1, readable, [(wr, 16 * 1024)], indirect=True)
    ((used_id, used_len),) = fe.wait_used(1)
    assert used_id == head
    assert seen == [[8192, len(req) - 8192]]
    body = req[IN_HEADER.size :]
    assert fe.read(wr + OUT_HEADER.size, used_len - OUT_HEADER.size) == body[::-1]


def test_views_a_session_keeps_are_released_once_answered(make_frontend, session) -> None:
    # After the used ring hands the buffers back, the guest owns them again: a view the
    # session held on to must not reach them any more. Views it did not keep just go.
    fe = make_frontend()
    fe.start()
    kept: list[memoryview] = []
    handle = session.handle

    def keep_reply_view(request, reply):
        kept.append(reply[0])
        return handle(request, reply)

    session.handle = keep_reply_view
    used_len, out = roundtrip(fe, 1, OP_GETATTR, 9, b"abc")
    assert used_len == OUT_HEADER.size + 3 and out[OUT_HEADER.size :] == b"cba"
    with pytest.raises(ValueError, match="released"):
        kept[0][0] = 1
