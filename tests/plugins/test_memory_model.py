"""Random write/truncate/punch/read sequences against a plain bytearray as the model."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from vfsframe_plugins.memory.content import CHUNK_SIZE as C

from tests.plugins.memfs_helpers import USER, make_fs
from vfsframe import ops

# Offsets cluster around chunk boundaries, where the off-by-one errors live.
offsets = st.one_of(
    st.integers(0, 5 * C),
    st.builds(lambda k, d: max(0, k * C + d), st.integers(0, 5), st.integers(-3, 3)),
)
lengths = st.one_of(st.integers(0, 16), st.integers(0, 2 * C + 5))
pieces = st.lists(st.tuples(st.integers(1, 255), lengths), min_size=1, max_size=4)


class FileModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.fs = make_fs()
        self.fh, _ = self.fs.create("/f")
        self.model = bytearray()

    @rule(offset=offsets, parts=pieces)
    def write(self, offset: int, parts: list[tuple[int, int]]) -> None:
        data = [bytes([value]) * length for value, length in parts]
        total = sum(map(len, data))
        assert self.fs.write("/f", self.fh, offset, *data) == total
        if total:
            end = offset + total
            if len(self.model) < end:
                self.model.extend(bytes(end - len(self.model)))
            self.model[offset:end] = b"".join(data)

    @rule(size=offsets)
    def truncate(self, size: int) -> None:
        self.fs.setattr("/f", size=size)
        if size < len(self.model):
            del self.model[size:]
        else:
            self.model.extend(bytes(size - len(self.model)))

    @rule(offset=offsets, length=lengths.filter(bool), keep=st.booleans())
    def fallocate(self, offset: int, length: int, keep: bool) -> None:
        req = ops.FallocateRequest(USER, "/f", self.fh, 1 if keep else 0, offset, length)
        self.fs.chain.fallocate(req)
        if not keep and offset + length > len(self.model):
            self.model.extend(bytes(offset + length - len(self.model)))

    @rule(offset=offsets, length=lengths.filter(bool))
    def punch(self, offset: int, length: int) -> None:
        req = ops.FallocateRequest(USER, "/f", self.fh, 3, offset, length)
        self.fs.chain.fallocate(req)
        end = min(offset + length, len(self.model))
        if offset < end:
            self.model[offset:end] = bytes(end - offset)

    @rule(offset=offsets, size=lengths)
    def read(self, offset: int, size: int) -> None:
        assert self.fs.read("/f", self.fh, offset, size) == self.model[offset : offset + size]

    @rule(offset=offsets, sizes=st.lists(st.integers(1, C + 7), min_size=1, max_size=4))
    def read_into(self, offset: int, sizes: list[int]) -> None:
        buffers = [bytearray(b"\xee" * n) for n in sizes]
        req = ops.ReadRequest(
            USER, "/f", self.fh, offset, sum(sizes), [memoryview(b) for b in buffers]
        )
        count = self.fs.chain.read(req)
        expect = self.model[offset : offset + sum(sizes)]
        assert count == len(expect)
        assert b"".join(buffers)[:count] == expect

    @rule(offset=offsets)
    def seek(self, offset: int) -> None:
        size = len(self.model)
        for whence in (os.SEEK_DATA, os.SEEK_HOLE):
            req = ops.LseekRequest(USER, "/f", self.fh, offset, whence)
            try:
                found = self.fs.chain.lseek(req)
            except OSError:
                found = None
            if offset >= size:
                assert found is None
            elif whence == os.SEEK_DATA:
                # Everything skipped over must read as zeros.
                stop = size if found is None else found
                assert found is None or offset <= found < size
                assert not any(self.model[offset:stop])
            else:
                assert found is not None and offset <= found <= size

    @invariant()
    def size_and_space_agree(self) -> None:
        attr = self.fs.stat("/f")
        assert attr.st_size == len(self.model)
        statfs = self.fs.statfs()
        used = (statfs.blocks - statfs.bfree) * statfs.frsize
        assert used <= attr.st_blocks * 512 + statfs.frsize


FileModel.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestFileModel = FileModel.TestCase
