"""Property test: whatever a guest writes into its rings, popping either yields chains whose
buffers lie inside guest memory or marks the queue broken; it never raises anything else."""

from __future__ import annotations

import ctypes
import mmap
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vfsframe.testing.virtio_driver import MEMFD_SIZE, REGIONS, user_addr
from vfsframe.virtio.memory import GuestMemory, map_regions
from vfsframe.virtio.virtqueue import DESC, QueueBroken, VirtQueue

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


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    table=st.lists(descriptors, min_size=SIZE, max_size=SIZE),
    indirect_table=st.lists(descriptors, min_size=0, max_size=SIZE + 2),
    heads=st.lists(st.integers(0, 0xFFFF), min_size=SIZE, max_size=SIZE),
    avail_idx=st.integers(0, 0xFFFF),
    indirect=st.booleans(),
)
def test_pop_never_escapes_guest_memory(table, indirect_table, heads, avail_idx, indirect):
    for i, d in enumerate(table):
        DESC.pack_into(_ram, DESC_AT + 16 * i, *d)
    for i, d in enumerate(indirect_table):
        DESC.pack_into(_ram, 0x2000 + 16 * i, *d)
    for i, h in enumerate(heads):
        _ram[AVAIL_AT + 4 + 2 * i : AVAIL_AT + 6 + 2 * i] = h.to_bytes(2, "little")
    _ram[AVAIL_AT + 2 : AVAIL_AT + 4] = avail_idx.to_bytes(2, "little")
    vq = VirtQueue(1)
    vq.set_size(SIZE)
    vq.set_addresses(user_addr(DESC_AT), user_addr(AVAIL_AT), user_addr(USED_AT))
    vq.indirect = indirect
    vq.attach(_memory)
    try:
        for _ in range(SIZE + 1):
            chain = vq.pop()
            if chain is None:
                break
            assert chain.head < SIZE
            for view in (*chain.readable, *chain.writable):
                assert not len(view) or _inside_guest_ram(view)
            assert len(chain.readable) + len(chain.writable) <= SIZE * 2 + 2  # <= 2 per desc
            chain.release()
            vq.push(chain.head, 0)
    except QueueBroken:
        assert vq.broken
        assert vq.pop() is None  # stays broken
    finally:
        vq.detach()
