"""Every malformed ring a guest can write: refused without touching memory outside guest RAM.

A bad buffer in a well-formed chain gets an EIO reply when the request header and the reply
space are usable (used length 0 otherwise); a corrupt ring marks the queue broken, logs it,
and leaves the rest of the device serving. The device never raises and never dies.
"""

from __future__ import annotations

import errno
import logging
import os
import time

import pytest

from vfsframe.testing.virtio_driver import GUARD_OFFSET, TestFrontEnd
from vfsframe.virtio import protocol as p
from vfsframe.virtio.descriptors import DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE
from vfsframe.virtio.device import VIRTIO_FEATURES

from .stub_session import OUT_HEADER, in_request

OP_GETATTR = 3
OUTSIDE = GUARD_OFFSET + 4096  # inside the memfd, but never given to the device

pytestmark = pytest.mark.usefixtures("ring_implementation")


@pytest.fixture
def fe(make_frontend) -> TestFrontEnd:
    fe = make_frontend(queue_size=16)
    fe.start()
    return fe


def request_buffers(fe: TestFrontEnd, unique: int = 7) -> tuple[int, int, int]:
    req = in_request(OP_GETATTR, unique, b"payload")
    return fe.alloc(len(req), req), len(req), fe.alloc(256)


def assert_still_serving(fe: TestFrontEnd, qi: int) -> None:
    rd, n, wr = request_buffers(fe, unique=999)
    head = fe.add_chain(qi, [(rd, n)], [(wr, 256)])
    (used,) = fe.wait_used(qi)
    assert used == (head, OUT_HEADER.size + 7)
    assert OUT_HEADER.unpack_from(fe.read(wr, 16))[2] == 999


def assert_broken(fe: TestFrontEnd, qi: int, caplog, words: str) -> None:
    """The queue stops being served, the reason is logged, other queues keep working."""
    deadline = time.monotonic() + 10
    while words not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "broken" in caplog.text and words in caplog.text, caplog.text
    # A valid request after the fault (in descriptors the bad chain did not use) is not
    # served either: the queue stays broken until the front-end resets it.
    fe.queues[qi].next_desc = 8
    rd, n, wr = request_buffers(fe)
    fe.add_chain(qi, [(rd, n)], [(wr, 256)])
    with pytest.raises(TimeoutError):
        fe.wait_used(qi, timeout=0.3)
    assert_still_serving(fe, 0 if qi else 1)
    assert fe.guard_intact()


# -- bad buffers in a well-formed chain: error reply where possible -----------------------


def test_payload_outside_guest_memory_gets_eio(fe, session, caplog) -> None:
    req = in_request(OP_GETATTR, 31)
    rd = fe.alloc(len(req), req)
    wr = fe.alloc(256)
    fe.add_chain(1, [(rd, len(req)), (OUTSIDE, 4096)], [(wr, 256)])
    with caplog.at_level(logging.WARNING):
        (used,) = fe.wait_used(1)
    assert used[1] == OUT_HEADER.size
    assert OUT_HEADER.unpack_from(fe.read(wr, 16)) == (16, -errno.EIO, 31)
    assert "outside guest memory" in caplog.text
    assert not session.requests, "a bad chain must not reach the session"
    assert fe.guard_intact()
    assert_still_serving(fe, 1)


def test_reply_buffer_outside_guest_memory(fe, session) -> None:
    rd, n, _ = request_buffers(fe)
    fe.add_chain(1, [(rd, n)], [(OUTSIDE, 4096)])
    (used,) = fe.wait_used(1)
    assert used[1] == 0  # nowhere to write an error: the chain is just returned
    assert fe.guard_intact()
    assert_still_serving(fe, 1)


def test_header_outside_guest_memory(fe) -> None:
    wr = fe.alloc(256, b"\x11" * 256)
    fe.add_chain(1, [(OUTSIDE, 40)], [(wr, 256)])
    assert fe.wait_used(1)[0][1] == 0
    assert fe.read(wr, 256) == b"\x11" * 256  # no unique to answer with: untouched
    assert fe.guard_intact()


def test_buffer_running_off_the_end_of_guest_memory(fe) -> None:
    rd, n, _ = request_buffers(fe)
    fe.add_chain(1, [(rd, n)], [(GUARD_OFFSET - 100, 4096)])  # last region ends at 4 MiB
    assert fe.wait_used(1)[0][1] == 0
    assert fe.guard_intact()
    assert_still_serving(fe, 1)


@pytest.mark.parametrize("addr", [(1 << 64) - 16, (1 << 64) - 1, 1 << 63])
def test_address_plus_length_overflow(fe, addr) -> None:
    rd, n, wr = request_buffers(fe, unique=12)
    fe.add_chain(1, [(rd, n), (addr, 0xFFFF_FFFF)], [(wr, 256)])
    (used,) = fe.wait_used(1)
    assert OUT_HEADER.unpack_from(fe.read(wr, 16)) == (16, -errno.EIO, 12)
    assert used[1] == 16
    assert fe.guard_intact()


def test_readable_after_writable_gets_eio(fe, session) -> None:
    rd, n, wr = request_buffers(fe, unique=13)
    q = fe.queues[1]
    fe.write_desc(q, 0, rd, n, DESC_F_NEXT, 1)
    fe.write_desc(q, 1, wr, 256, DESC_F_WRITE | DESC_F_NEXT, 2)
    fe.write_desc(q, 2, rd, n, 0, 0)
    q.next_desc = 3
    fe.publish(1, 0)
    (_used,) = fe.wait_used(1)
    assert OUT_HEADER.unpack_from(fe.read(wr, 16)) == (16, -errno.EIO, 13)
    assert not session.requests


def test_reply_buffer_too_small(fe) -> None:
    rd, n, _ = request_buffers(fe)
    wr = fe.alloc(64, b"\x22" * 64)
    fe.add_chain(1, [(rd, n)], [(wr, 8)])
    (used,) = fe.wait_used(1)
    assert used[1] == 0
    assert fe.read(wr + 8, 56) == b"\x22" * 56  # nothing beyond the 8-byte buffer
    assert_still_serving(fe, 1)


def test_too_small_reply_on_bad_chain_is_not_written(fe) -> None:
    req = in_request(OP_GETATTR, 3)
    rd = fe.alloc(len(req), req)
    wr = fe.alloc(64, b"\x33" * 64)
    fe.add_chain(1, [(rd, len(req)), (OUTSIDE, 16)], [(wr, 8)])
    assert fe.wait_used(1)[0][1] == 0
    assert fe.read(wr, 64) == b"\x33" * 64


def test_session_claiming_more_than_it_could_write(fe, session, caplog) -> None:
    session.handle = lambda request, reply: 1 << 30
    rd, n, wr = request_buffers(fe)
    fe.add_chain(1, [(rd, n)], [(wr, 256)])
    with caplog.at_level(logging.ERROR):
        assert fe.wait_used(1)[0][1] == 0
    assert "reported" in caplog.text


# -- corrupt rings: the queue is marked broken -----------------------------------------------


def test_descriptor_loop(fe, caplog) -> None:
    rd, n, _ = request_buffers(fe)
    q = fe.queues[1]
    fe.write_desc(q, 0, rd, n, DESC_F_NEXT, 1)
    fe.write_desc(q, 1, rd, n, DESC_F_NEXT, 0)
    fe.publish(1, 0)
    caplog.set_level(logging.ERROR)
    with pytest.raises(TimeoutError):
        fe.wait_used(1, timeout=0.3)
    assert "longer than the queue" in caplog.text
    assert_still_serving(fe, 0)


def test_chain_longer_than_queue_without_loop_in_indirect(fe, caplog) -> None:
    # A 16-entry ring; an indirect table of 16 entries that chains into a self-loop.
    q = fe.queues[1]
    rd, n, _ = request_buffers(fe)
    table = fe.alloc(16 * 16)
    for i in range(16):
        fe.write_desc(q, i, rd, n, DESC_F_NEXT, (i + 1) % 16, table)
    fe.write_desc(q, 0, table, 16 * 16, DESC_F_INDIRECT, 0)
    caplog.set_level(logging.ERROR)
    fe.publish(1, 0)
    assert_broken(fe, 1, caplog, "longer than the queue")


def test_nested_indirect_table(fe, caplog) -> None:
    q = fe.queues[1]
    inner = fe.alloc(32)
    outer = fe.alloc(32)
    rd, n, _ = request_buffers(fe)
    fe.write_desc(q, 0, rd, n, 0, 0, inner)
    fe.write_desc(q, 0, inner, 16, DESC_F_INDIRECT, 0, outer)
    fe.write_desc(q, 0, outer, 16, DESC_F_INDIRECT, 0)
    caplog.set_level(logging.ERROR)
    fe.publish(1, 0)
    assert_broken(fe, 1, caplog, "nests an indirect table")


@pytest.mark.parametrize(
    ("length", "words"),
    [(0, "indirect table of 0"), (24, "indirect table of 24"), (17 * 16, "indirect table of")],
)
def test_bad_indirect_table_length(fe, caplog, length, words) -> None:
    table = fe.alloc(max(length, 16))
    fe.write_desc(fe.queues[1], 0, table, length, DESC_F_INDIRECT, 0)
    caplog.set_level(logging.ERROR)
    fe.publish(1, 0)
    assert_broken(fe, 1, caplog, words)


def test_indirect_table_outside_guest_memory(fe, caplog) -> None:
    fe.write_desc(fe.queues[1], 0, OUTSIDE, 64, DESC_F_INDIRECT, 0)
    caplog.set_level(logging.ERROR)
    fe.publish(1, 0)
    assert_broken(fe, 1, caplog, "indirect table")


def test_indirect_with_next_flag(fe, caplog) -> None:
    table = fe.alloc(16)
    fe.write_desc(fe.queues[1], 0, table, 16, DESC_F_INDIRECT | DESC_F_NEXT, 1)
    caplog.set_level(logging.ERROR)
    fe.publish(1, 0)
    assert_broken(fe, 1, caplog, "also has NEXT")


def test_indirect_next_index_out_of_table(fe, caplog) -> None:
    rd, n, _ = request_buffers(fe)
    table = fe.alloc(32)
    q = fe.queues[1]
    fe.write_desc(q, 0, rd, n, DESC_F_NEXT, 2, table)  # the table has 2 entries
    fe.write_desc(q, 0, table, 32, DESC_F_INDIRECT, 0)
    caplog.set_level(logging.ERROR)
    fe.publish(1, 0)
    assert_broken(fe, 1, caplog, "next index 2 out of range")


def test_indirect_not_negotiated(make_frontend, caplog) -> None:
    fe = make_frontend(queue_size=16)
    fe.negotiate(features=VIRTIO_FEATURES & ~(1 << p.VIRTIO_RING_F_INDIRECT_DESC))
    fe.set_mem_table()
    fe.setup_queue(0)
    fe.setup_queue(1)
    table = fe.alloc(16)
    fe.write_desc(fe.queues[1], 0, table, 16, DESC_F_INDIRECT, 0)
    caplog.set_level(logging.ERROR)
    fe.publish(1, 0)
    assert_broken(fe, 1, caplog, "not negotiated")


def test_head_index_out_of_range(fe, caplog) -> None:
    caplog.set_level(logging.ERROR)
    fe.publish(1, 16)
    assert_broken(fe, 1, caplog, "head index 16")


def test_next_index_out_of_range(fe, caplog) -> None:
    rd, n, _ = request_buffers(fe)
    fe.write_desc(fe.queues[1], 0, rd, n, DESC_F_NEXT, 0xFFFF)
    caplog.set_level(logging.ERROR)
    fe.publish(1, 0)
    assert_broken(fe, 1, caplog, "next index 65535")


def test_avail_index_jumps_past_ring_size(fe, caplog) -> None:
    caplog.set_level(logging.ERROR)
    fe.set_avail_idx(1, 17)
    fe.kick(1)
    assert_broken(fe, 1, caplog, "avail index moved 17")


def test_broken_queue_signals_err_fd_and_recovers_after_reset(fe, caplog) -> None:
    err = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
    assert fe.call(p.Request.SET_VRING_ERR, p.U64.pack(1), [err]) == 0
    caplog.set_level(logging.ERROR)
    fe.publish(1, 200)
    assert_broken(fe, 1, caplog, "head index 200")
    assert os.eventfd_read(err) == 1
    os.close(err)
    # The front-end resets the ring (as QEMU does on a device reset) and it works again.
    fe.get_vring_base(1)
    fe.queues[1].next_desc = 0
    os.close(fe.queues[1].kick)
    os.close(fe.queues[1].call)
    fe.setup_queue(1, base=0)
    assert_still_serving(fe, 1)


def test_ring_addresses_outside_guest_memory_are_refused(make_frontend) -> None:
    fe = make_frontend(queue_size=16)
    fe.negotiate()
    fe.set_mem_table()
    fe.send(p.Request.SET_VRING_NUM, p.VRING_STATE.pack(1, 16))
    fe.send(p.Request.SET_VRING_ADDR, p.VRING_ADDR.pack(1, 0, 0x10, 0x20, 0x30, 0))
    kick = os.eventfd(0, os.EFD_CLOEXEC)
    assert fe.call(p.Request.SET_VRING_KICK, p.U64.pack(1), [kick]) != 0
    os.close(kick)
    assert fe.get_u64(p.Request.GET_QUEUE_NUM) == 2  # the connection lives on


def test_misaligned_ring_is_refused(make_frontend) -> None:
    fe = make_frontend(queue_size=16)
    fe.negotiate()
    payload = p.VRING_ADDR.pack(1, 0, 0x7F00_1000_1008, 0x7F00_1000_2000, 0x7F00_1000_3000, 0)
    assert fe.call(p.Request.SET_VRING_ADDR, payload) != 0


def test_truncated_message_payload_drops_connection(make_frontend, caplog) -> None:
    fe = make_frontend()
    fe.negotiate()
    with caplog.at_level(logging.ERROR):
        fe.send(p.Request.SET_VRING_NUM, b"\x01", need_reply=True)
        fe.sock.settimeout(10)
        assert p.recv_message(fe.sock) is None
    assert "payload too short" in caplog.text


def test_oversized_payload_drops_connection(make_frontend) -> None:
    fe = make_frontend()
    fe.sock.sendall(p.HEADER.pack(p.Request.SET_FEATURES, p.FLAG_VERSION, 1 << 20))
    fe.sock.settimeout(10)
    assert p.recv_message(fe.sock) is None


def test_guest_memory_guard_after_everything(fe) -> None:
    # The guard lies in the same memfd right after guest RAM: writes that ignored the region
    # table would land there.
    assert fe.guard_intact()
    assert fe.read(GUARD_OFFSET, 1)[0] == 0xA5


def test_kick_fd_that_cannot_be_polled(make_frontend, caplog, tmp_path) -> None:
    fe = make_frontend(queue_size=16)
    fe.negotiate()
    fe.set_mem_table()
    fe.setup_queue(0)
    fe.setup_queue(1)
    caplog.set_level(logging.ERROR)
    regular = os.open(tmp_path / "not-an-eventfd", os.O_RDWR | os.O_CREAT)
    fe.call(p.Request.SET_VRING_KICK, p.U64.pack(1), [regular])
    os.close(regular)
    deadline = time.monotonic() + 10
    while "thread failed" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "queue 1: thread failed" in caplog.text
    assert_still_serving(fe, 0)  # the device and its other queues carry on
