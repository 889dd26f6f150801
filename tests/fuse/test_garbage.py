"""Garbage in, a well-formed answer (or none) out: ``FuseSession.handle`` under hypothesis.

After a valid INIT and a little setup (a directory, an open file, an open directory), the
session is fed random bytes and random requests: real or unknown opcodes, lying lengths,
truncated or oversized arguments, names good and bad, handles and nodeids that exist or not,
cut at random points, with reply space down to nothing. Whatever it gets, ``handle`` must
not raise, must answer within the reply space with a header that echoes the unique and
carries 0 or an errno Linux accepts, must answer every request that expects an answer when
there is room for a header, and must go on serving the root afterwards.
"""

from __future__ import annotations

from collections.abc import Generator
from struct import Struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vfsframe_plugins.memory import PLUGIN

from vfsframe import ops
from vfsframe.chain import ShareChain
from vfsframe.fuse import abi
from vfsframe.fuse.abi import Opcode
from vfsframe.hookspecs import hookimpl
from vfsframe.plugin import Middleware
from vfsframe.session import FuseSession

from .kernel import ARGUMENTS, MAX_ERRNO, FakeKernel, at, reply_space, segments

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
HEADER = abi.IN_HEADER
NO_REPLY = {Opcode.FORGET, Opcode.BATCH_FORGET, Opcode.INTERRUPT}
U64 = st.integers(0, 2**64 - 1)


class Bounded(Middleware):
    """Keeps a fuzzed request from blocking the test rather than the session: SETLKW may not
    wait (nothing would ever unlock), and a copy may not span a vast sparse range (the
    memory backend walks such a range chunk by chunk before it refuses it)."""

    @hookimpl(wrapper=True)
    def vfs_setlk(self, req: ops.SetlkRequest) -> Generator[None, Any, Any]:
        req.wait = False
        return (yield)

    @hookimpl(wrapper=True)
    def vfs_copy_file_range(self, req: ops.CopyFileRangeRequest) -> Generator[None, Any, Any]:
        req.length = min(req.length, 1 << 24)
        return (yield)


def prepared_session() -> tuple[FuseSession, FakeKernel]:
    """An initialized session with /d, /d/f (open as fh 1), /d opened (fh 2) and /l."""
    backend = PLUGIN.build(PLUGIN.config(capacity=8 << 20, max_inodes=200), None)
    session = FuseSession(ShareChain(backend, [Bounded()]))
    kernel = FakeKernel(session)
    kernel.init()
    d = kernel.mkdir(abi.ROOT_ID, "d")["nodeid"]
    entry, opened = kernel.create(d, "f")
    assert (d, entry["nodeid"], opened["fh"]) == (2, 3, 1)
    kernel.write(3, 1, 0, b"some data" * 100)
    kernel.setxattr(3, "user.x", b"value")
    assert kernel.opendir(d)["fh"] == 2
    assert kernel.symlink(abi.ROOT_ID, "l", "d/f")["nodeid"] == 4
    return session, kernel


# -- strategies ----------------------------------------------------------------------------

OPCODES = st.one_of(
    st.sampled_from(sorted(ARGUMENTS)),  # every opcode the session implements
    st.sampled_from([0, 37, 39, 40, 41, 48, 49, 51, 52, 4096]),  # ones it does not
    st.integers(0, 2**32 - 1),
)
NODEIDS = st.one_of(st.sampled_from([abi.ROOT_ID, 2, 3, 4]), st.sampled_from([0, 5, 99]), U64)
NAMES = st.one_of(
    st.sampled_from([b"d", b"f", b"l", b"new", b".", b"..", b"", b"a/b", b"x" * 256]),
    st.binary(max_size=40),
)


@st.composite
def fixed_arguments(draw: st.DrawFn, layout: Struct) -> bytes:
    """Random bytes the size of ``layout``, often with an open handle in its first field."""
    raw = bytearray(draw(st.binary(min_size=layout.size, max_size=layout.size)))
    if layout.size >= 8 and draw(st.integers(0, 3)):
        # 1 is the open file, 2 the open directory (see prepared_session).
        raw[:8] = draw(st.sampled_from([1, 2, 1, 2, 3, 0])).to_bytes(8, "little")
    return bytes(raw)


@st.composite
def bodies(draw: st.DrawFn, opcode: int) -> bytes:
    layout, names = ARGUMENTS.get(opcode, (None, 0))
    body = draw(fixed_arguments(layout)) if layout is not None else b""
    for _ in range(max(names, 0)):
        body += draw(NAMES) + b"\0"
    if names < 0 or not draw(st.booleans()):
        body += draw(st.binary(max_size=64))  # payload, or trailing junk
    how = draw(st.sampled_from(["as is", "as is", "truncated", "grown"]))
    if how == "truncated":
        body = body[: draw(st.integers(0, len(body)))]
    elif how == "grown":
        body += draw(st.binary(min_size=1, max_size=300))
    return body


@st.composite
def structured_requests(draw: st.DrawFn) -> bytes:
    opcode = draw(OPCODES)
    body = draw(bodies(opcode))
    extlen = draw(st.sampled_from([0, 0, 0, 1, 2, 0xFFFF]))
    if extlen <= 2:
        body += draw(st.binary(min_size=8 * extlen, max_size=8 * extlen))  # extensions
    length = HEADER.size + len(body)
    if draw(st.integers(0, 9)) == 0:  # a header that lies about the length
        length = draw(st.one_of(st.integers(0, length + 64), st.integers(0, 2**32 - 1)))
    uid, gid, pid = draw(st.sampled_from([(0, 0, 0), (1000, 1000, 7)]))
    unique, nodeid = draw(U64), draw(NODEIDS)
    return HEADER.pack(length, opcode, unique, nodeid, uid, gid, pid, extlen, 0) + body


REQUESTS = st.one_of(
    st.binary(max_size=200),  # noise
    st.binary(min_size=HEADER.size, max_size=200).map(  # noise with a matching length
        lambda raw: len(raw).to_bytes(4, "little") + raw[4:]
    ),
    structured_requests(),
)


@st.composite
def cut_points(draw: st.DrawFn, length: int) -> list[int]:
    if length == 0 or draw(st.booleans()):
        return []
    return draw(st.lists(st.integers(0, length), max_size=8))


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[bytes, list[int], int, list[int]]:
    """A request, where to cut it, the reply capacity and where to cut that."""
    request = draw(REQUESTS)
    capacity = draw(
        st.one_of(
            st.integers(0, 40),  # including less than an out header
            st.integers(0, 512),
            st.just(1 << 17),
        )
    )
    return request, draw(cut_points(len(request))), capacity, draw(cut_points(capacity))


# -- the property --------------------------------------------------------------------------


def deliver(
    session: FuseSession, request: bytes, cuts: list[int], capacity: int, rcuts: list[int]
) -> None:
    """Hand one request to the session and check the answer against the protocol."""
    reply = reply_space(capacity, at(*rcuts))
    size = session.handle(segments(request, at(*cuts)), reply)
    assert isinstance(size, int) and 0 <= size <= capacity, size
    if len(request) < HEADER.size:
        assert size == 0, "answered a request that has no header"
        return
    length, opcode, unique, *_ = HEADER.unpack_from(request)
    if size == 0:
        # Silence is only right for what the kernel never waits on, or when no header fits.
        assert opcode in NO_REPLY or capacity < abi.OUT_HEADER.size, (opcode, capacity)
        return
    out = b"".join(bytes(view) for view in reply)
    out_len, error, echoed = abi.OUT_HEADER.unpack_from(out)
    assert out_len == size
    assert echoed == unique
    assert -MAX_ERRNO <= error <= 0, error
    if error:
        assert size == abi.OUT_HEADER.size
    else:
        assert length == len(request), "a request with a lying header was served"
        assert opcode in ARGUMENTS, f"unknown opcode {opcode} was served"


def still_serves(session: FuseSession, kernel: FakeKernel, requests: list[bytes]) -> None:
    if not session.initialized:
        # Only DESTROY ends the negotiated state.
        destroys = [
            r for r in requests if len(r) >= 8 and r[4:8] == Opcode.DESTROY.to_bytes(4, "little")
        ]
        assert destroys, "the session forgot INIT without a DESTROY"
        kernel.init()
    root = kernel.getattr(abi.ROOT_ID)["attr"]
    assert root["ino"] == 1 and root["mode"] & 0o170000 == 0o040000
    assert kernel.statfs()["namelen"] == 255


@SETTINGS
@given(st.lists(deliveries(), min_size=1, max_size=6))
def test_garbage_never_breaks_the_session(
    batch: list[tuple[bytes, list[int], int, list[int]]],
) -> None:
    session, kernel = prepared_session()
    for request, cuts, capacity, rcuts in batch:
        deliver(session, request, cuts, capacity, rcuts)
    still_serves(session, kernel, [request for request, *_ in batch])


@pytest.mark.parametrize("opcode", sorted(ARGUMENTS), ids=lambda op: Opcode(op).name)
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_each_opcode_with_random_arguments(opcode: int, data: st.DataObject) -> None:
    """Every implemented opcode, with a correct header and random arguments, on live
    nodeids and handles, cut and answered into scattered space of any size."""
    session, kernel = prepared_session()
    body = data.draw(bodies(opcode))
    nodeid = data.draw(st.sampled_from([abi.ROOT_ID, 2, 3, 4]))
    unique = data.draw(U64)
    request = HEADER.pack(HEADER.size + len(body), opcode, unique, nodeid, 0, 0, 0, 0, 0) + body
    capacity = data.draw(st.sampled_from([0, 8, 15, 16, 17, 100, 1 << 17]))
    cuts, rcuts = data.draw(cut_points(len(request))), data.draw(cut_points(capacity))
    deliver(session, request, cuts, capacity, rcuts)
    still_serves(session, kernel, [request])
