"""Property tests: whatever a guest writes into its rings, popping either yields chains whose
buffers lie inside guest memory or marks the queue broken; it never raises anything else.
And the C ring (_split_ring) pops exactly what the Python reference (split_ring) pops."""

from __future__ import annotations

import ctypes
import mmap
import os
from unittest.mock import patch

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vfsframe.testing.virtio_driver import MEMFD_SIZE, REGIONS, user_addr
from vfsframe.virtio import split_ring, virtqueue
from vfsframe.virtio._split_ring import SplitRing
from vfsframe.virtio.descriptors import DESC, DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE
from vfsframe.virtio.memory import GuestMemory, map_regions
from vfsframe.virtio.split_ring import PyRing
from vfsframe.virtio.virtqueue import QueueBroken, VirtQueue

SIZE = 8
DESC_AT, AVAIL_AT, USED_AT = 0x1000, 0x1100, 0x1200

_memfd = os.memfd_create("fuzz-guest-ram", os.MFD_CLOEXEC)
os.ftruncate(_memfd, MEMFD_SIZE)
_ram = mmap.mmap(_memfd, MEMFD_SIZE)
_memory = GuestMemory(map_regions(list(REGIONS), [os.dup(_memfd) for _ in REGIONS]))
_ram_end = REGIONS[-1].guest_addr + REGIONS[-1].size


def _address(view: memoryview) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(view)) if len(view) else 0


_spans = [(_address(r.view), len(r.view)) for r in _memory.regions]


def _inside_guest_ram(view: memoryview) -> bool:
    start = _address(view)
    return any(base <= start and start + len(view) <= base + n for base, n in _spans)


addresses = st.one_of(
    st.integers(0, _ram_end + 4096),  # mostly in RAM, sometimes just past it
    st.integers(0, (1 << 64) - 1),
    st.sampled_from([0, REGIONS[1].guest_addr - 8, _ram_end - 1, (1 << 64) - 1]),
)
descriptors = st.tuples(
    addresses,
    st.one_of(st.integers(0, 8192), st.integers(0, 0xFFFF_FFFF)),
    st.integers(0, 7),  # NEXT | WRITE | INDIRECT in any combination
    st.one_of(st.integers(0, SIZE + 1), st.integers(0, 0xFFFF)),
)


def _queue(size: int, indirect: bool, implementation: type) -> VirtQueue:
    _ram[USED_AT : USED_AT + 6 + 8 * size] = bytes(6 + 8 * size)
    vq = VirtQueue(1)
    vq.set_size(size)
    vq.set_addresses(user_addr(DESC_AT), user_addr(AVAIL_AT), user_addr(USED_AT))
    vq.indirect = indirect
    with patch.object(virtqueue, "RING_IMPLEMENTATION", implementation):
        vq.attach(_memory)
    return vq


def _buffer_list(views: list[memoryview]) -> list[tuple[int, int]]:
    return [(_address(v), len(v)) for v in views]


def _pop_all(indirect: bool, implementation: type) -> tuple[list[object], bytes]:
    """Pop and push back every chain of the ring in _ram, checking each buffer lies in guest
    RAM: each chain as (head, buffers, error), or the breakage; and the used ring after."""
    vq = _queue(SIZE, indirect, implementation)
    outcomes: list[object] = []
    try:
        for _ in range(SIZE + 1):
            chain = vq.pop()
            if chain is None:
                break
            assert chain.head < SIZE
            for view in (*chain.readable, *chain.writable):
                assert not len(view) or _inside_guest_ram(view)
            assert len(chain.readable) + len(chain.writable) <= SIZE * 2 + 2  # <= 2 per desc
            outcomes.append(
                (
                    chain.head,
                    _buffer_list(chain.readable),
                    _buffer_list(chain.writable),
                    chain.error,
                )
            )
            chain.release()
            vq.push(chain.head, len(outcomes))
    except QueueBroken as exc:
        assert vq.broken
        assert vq.pop() is None  # stays broken
        outcomes.append(str(exc))
    finally:
        vq.detach()
    return outcomes, bytes(_ram[USED_AT : USED_AT + 6 + 8 * SIZE])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    table=st.lists(descriptors, min_size=SIZE, max_size=SIZE),
    indirect_table=st.lists(descriptors, min_size=0, max_size=SIZE + 2),
    heads=st.lists(st.integers(0, 0xFFFF), min_size=SIZE, max_size=SIZE),
    avail_idx=st.integers(0, 0xFFFF),
    indirect=st.booleans(),
)
def test_pop_never_escapes_guest_memory(table, indirect_table, heads, avail_idx, indirect):
    """...and the C ring pops, breaks and fills the used ring exactly as the reference does."""
    for i, d in enumerate(table):
        DESC.pack_into(_ram, DESC_AT + 16 * i, *d)
    for i, d in enumerate(indirect_table):
        DESC.pack_into(_ram, 0x2000 + 16 * i, *d)
    for i, h in enumerate(heads):
        _ram[AVAIL_AT + 4 + 2 * i : AVAIL_AT + 6 + 2 * i] = h.to_bytes(2, "little")
    _ram[AVAIL_AT + 2 : AVAIL_AT + 4] = avail_idx.to_bytes(2, "little")
    assert _pop_all(indirect, SplitRing) == _pop_all(indirect, PyRing)


def _pop_one(table: list[tuple[int, int, int, int]], implementation: type) -> tuple[str, object]:
    """Pop the one chain of a queue whose head is an indirect table holding `table`: the
    chain's head and buffers as (guest RAM offset, length) pairs, or the breakage."""
    for i, d in enumerate(table):
        DESC.pack_into(_ram, 0x2000 + 16 * i, *d)
    DESC.pack_into(_ram, DESC_AT, 0x2000, 16 * len(table), DESC_F_INDIRECT, 0)
    _ram[AVAIL_AT + 4 : AVAIL_AT + 6] = (0).to_bytes(2, "little")
    _ram[AVAIL_AT + 2 : AVAIL_AT + 4] = (1).to_bytes(2, "little")
    vq = _queue(64, True, implementation)
    try:
        chain = vq.pop()
        assert chain is not None
        buffers = [_buffer_list(views) for views in (chain.readable, chain.writable)]
        chain.release()
        return "chain", (chain.head, buffers, chain.error)
    except QueueBroken as exc:
        return "broken", str(exc)
    finally:
        vq.detach()


pages = st.integers(0, _ram_end // 4096 + 1).map(lambda p: p * 4096)
table_entries = st.tuples(
    st.booleans(),  # continues the buffer before it in guest memory (a guest's pages often do)
    st.one_of(pages, pages.map(lambda a: a + 512), addresses),
    st.one_of(st.just(4096), st.integers(0, 8192)),
)


def _buffers(entries: list[tuple[bool, int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for follows, addr, length in entries:
        out.append(((out[-1][0] + out[-1][1]) % (1 << 64) if follows and out else addr, length))
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    entries=st.lists(table_entries, min_size=1, max_size=40),
    writable_from=st.integers(0, 40),
    mutations=st.lists(st.tuples(st.integers(0, 39), st.integers(0, 3), st.integers(0, 0xFFFF))),
)
def test_flat_table_reading_matches_the_walk(entries, writable_from, mutations):
    """An indirect table read in one go (the Python fast path for long tables) gives exactly
    what the descriptor-by-descriptor walk gives, and every table it cannot take falls back to
    it; the C ring gives the same again: mostly well-formed tables of pages, some contiguous,
    with random damage."""
    table = [
        [addr, length, DESC_F_NEXT | (DESC_F_WRITE if i >= writable_from else 0), i + 1]
        for i, (addr, length) in enumerate(_buffers(entries))
    ]
    table[-1][2] &= ~DESC_F_NEXT
    for index, field, value in mutations:
        if index < len(table):
            table[index][field] = value if field != 2 else value & 7
    table = [tuple(d) for d in table]
    with patch.object(split_ring, "FLAT_TABLE_MIN", 1 << 20):
        walked = _pop_one(table, PyRing)
    with patch.object(split_ring, "FLAT_TABLE_MIN", 1):
        read_flat = _pop_one(table, PyRing)
    assert read_flat == walked
    assert _pop_one(table, SplitRing) == walked


@pytest.mark.parametrize("implementation", [PyRing, SplitRing])
@pytest.mark.parametrize("overshoot", [1, 4096])
def test_run_that_crosses_a_region_end(implementation, overshoot):
    """A buffer that follows a run but crosses its region's end does not extend the run: past
    the first region (another region follows) it is split in two, past the end of guest RAM
    (nothing follows) it is refused."""
    middle, ram_end = REGIONS[1].guest_addr, _ram_end
    table = [
        (middle - 8, 7, DESC_F_NEXT | DESC_F_WRITE, 1),
        (middle - 1, 1 + overshoot, DESC_F_NEXT | DESC_F_WRITE, 2),
        (ram_end - 8, 7, DESC_F_NEXT | DESC_F_WRITE, 3),
        (ram_end - 1, 1 + overshoot, DESC_F_WRITE, 0),
    ]
    kind, (head, (readable, writable), error) = _pop_one(table, implementation)
    assert kind == "chain" and head == 0 and readable == []
    assert [length for _, length in writable] == [7, 1, overshoot, 7]
    assert error == f"guest address {ram_end:#x} is outside guest memory"


def test_the_c_ring_serves_unless_python_is_asked_for(monkeypatch):
    """The C module is built by every install this project makes (CI's included): serving
    falls back to the Python ring only when asked to, or when the module is missing."""
    monkeypatch.delenv("VFSFRAME_RING", raising=False)
    assert virtqueue._ring_implementation() is SplitRing
    monkeypatch.setenv("VFSFRAME_RING", "python")
    assert virtqueue._ring_implementation() is PyRing
