"""Guest memory: the front-end's memfd regions, mapped once, and address translation.

Two address spaces reach us: descriptor addresses are guest-physical; the ring addresses in
SET_VRING_ADDR are the front-end's (QEMU's) own virtual addresses. Both are translated through
the same region table, and every (address, length) is checked against it: nothing a guest
writes into a ring can make us touch memory outside its RAM.

A mapping is never unmapped while a memoryview into it is alive (an in-flight request may hold
one after the front-end removed the region): close() only drops our references, and the
kernel mapping goes away when the last view does. That trades a little address space for the
impossibility of a use-after-unmap.
"""

from __future__ import annotations

import bisect
import gc
import logging
import mmap
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from vfsframe.virtio.protocol import RegionDescription

log = logging.getLogger(__name__)

ADDR_LIMIT = 1 << 64


class GuestMemoryError(Exception):
    """A guest-supplied address range is not inside the guest's memory."""


@dataclass(eq=False)
class MemoryRegion:
    """One region of guest RAM, mapped from the fd the front-end sent."""

    desc: RegionDescription
    view: memoryview
    _map: mmap.mmap | None = field(repr=False, default=None)
    # Plain attributes, not properties: read for every descriptor of every chain.
    guest_addr: int = field(init=False)
    guest_end: int = field(init=False)

    def __post_init__(self) -> None:
        self.guest_addr = self.desc.guest_addr
        self.guest_end = self.desc.guest_addr + self.desc.size

    @property
    def user_addr(self) -> int:
        return self.desc.user_addr

    @property
    def user_end(self) -> int:
        return self.desc.user_addr + self.desc.size

    @classmethod
    def map_fd(cls, desc: RegionDescription, fd: int) -> MemoryRegion:
        """Map the region from fd (the caller still owns fd and closes it)."""
        if desc.size == 0:
            raise GuestMemoryError("memory region of size 0")
        if desc.guest_addr + desc.size > ADDR_LIMIT or desc.user_addr + desc.size > ADDR_LIMIT:
            raise GuestMemoryError(f"memory region {desc} wraps the address space")
        # mmap offsets must be page aligned; QEMU's usually are, but do not rely on it.
        aligned = desc.mmap_offset - desc.mmap_offset % mmap.ALLOCATIONGRANULARITY
        delta = desc.mmap_offset - aligned
        try:
            mapping = mmap.mmap(
                fd,
                desc.size + delta,
                flags=mmap.MAP_SHARED,
                prot=mmap.PROT_READ | mmap.PROT_WRITE,
                offset=aligned,
            )
        except (OSError, ValueError, OverflowError) as exc:
            raise GuestMemoryError(f"cannot map memory region {desc}: {exc}") from exc
        view = memoryview(mapping)[delta : delta + desc.size]
        return cls(desc, view, mapping)

    def close(self) -> None:
        self.view.release()
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:
                # Views often linger only in reference cycles (an exception's traceback holds
                # the frame that held the request's views): collect them, then try again.
                gc.collect()
                try:
                    self._map.close()
                except BufferError:
                    # Really still in use: the mapping goes when its last view does.
                    log.debug("region %#x still referenced; unmapped later", self.guest_addr)
            self._map = None


class GuestMemory:
    """An immutable table of regions. Changes build a new table; readers keep the old one
    they looked up until they are done, so no lock is needed on the data path."""

    def __init__(self, regions: Iterable[MemoryRegion] = ()) -> None:
        self.regions: tuple[MemoryRegion, ...] = tuple(sorted(regions, key=lambda r: r.guest_addr))
        self._starts = [r.guest_addr for r in self.regions]
        for prev, cur in zip(self.regions, self.regions[1:], strict=False):
            if cur.guest_addr < prev.guest_end:
                raise GuestMemoryError(f"memory regions overlap at {cur.guest_addr:#x}")

    def __len__(self) -> int:
        return len(self.regions)

    def with_region(self, region: MemoryRegion) -> GuestMemory:
        return GuestMemory((*self.regions, region))

    def without_region(self, desc: RegionDescription) -> tuple[GuestMemory, MemoryRegion | None]:
        """A table without the region matching desc (guest address and size), and that region."""
        for r in self.regions:
            if r.guest_addr == desc.guest_addr and r.desc.size == desc.size:
                return GuestMemory(x for x in self.regions if x is not r), r
        return self, None

    def _region_at(self, addr: int) -> MemoryRegion | None:
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0:
            region = self.regions[i]
            if addr < region.guest_end:
                return region
        return None

    def region_containing(self, addr: int, length: int) -> MemoryRegion | None:
        """The region holding all of guest-physical [addr, addr+length), if one does."""
        region = self._region_at(addr)
        if region is not None and addr + length <= region.guest_end:
            return region
        return None

    def gather(self, addr: int, length: int, out: list[memoryview]) -> None:
        """Append views covering guest-physical [addr, addr+length) to out. The range may
        span adjacent regions; a hole anywhere in it is an error (and appends nothing)."""
        if addr < 0 or length < 0 or addr + length > ADDR_LIMIT:
            raise GuestMemoryError(f"guest range {addr:#x}+{length:#x} overflows")
        first = len(out)
        while length:
            region = self._region_at(addr)
            if region is None:
                del out[first:]  # all or nothing: no partial buffer for a bad descriptor
                raise GuestMemoryError(f"guest address {addr:#x} is outside guest memory")
            start = addr - region.guest_addr
            take = min(length, region.guest_end - addr)
            out.append(region.view[start : start + take])
            addr += take
            length -= take

    def view(self, addr: int, length: int) -> memoryview:
        """One view of guest-physical [addr, addr+length), which must lie in one region."""
        if addr < 0 or length <= 0 or addr + length > ADDR_LIMIT:
            raise GuestMemoryError(f"guest range {addr:#x}+{length:#x} is invalid")
        region = self._region_at(addr)
        if region is None or addr + length > region.guest_end:
            raise GuestMemoryError(f"guest range {addr:#x}+{length:#x} is not in one region")
        start = addr - region.guest_addr
        return region.view[start : start + length]

    def user_view(self, addr: int, length: int) -> memoryview:
        """A view of the front-end's virtual range [addr, addr+length) in one region (rings)."""
        if addr < 0 or length <= 0 or addr + length > ADDR_LIMIT:
            raise GuestMemoryError(f"front-end range {addr:#x}+{length:#x} is invalid")
        for region in self.regions:
            if region.user_addr <= addr and addr + length <= region.user_end:
                start = addr - region.user_addr
                return region.view[start : start + length]
        raise GuestMemoryError(f"front-end range {addr:#x}+{length:#x} is not in guest memory")

    def close(self) -> None:
        for region in self.regions:
            region.close()


def map_regions(descs: list[RegionDescription], fds: list[int]) -> list[MemoryRegion]:
    """Map each described region from its fd; all or nothing. Closes every fd."""
    regions: list[MemoryRegion] = []
    try:
        if len(fds) != len(descs):
            raise GuestMemoryError(f"{len(descs)} memory regions but {len(fds)} fds")
        for desc, fd in zip(descs, fds, strict=True):
            regions.append(MemoryRegion.map_fd(desc, fd))
    except BaseException:
        for r in regions:
            r.close()
        raise
    finally:
        for fd in fds:
            os.close(fd)
        fds.clear()
    return regions
