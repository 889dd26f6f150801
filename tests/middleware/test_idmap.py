"""idmap in-process: range lookups, callers, attributes out, ownership in."""

from __future__ import annotations

import errno
from typing import Any

import pytest
from pydantic import ValidationError
from vfsframe_plugins.idmap import IdmapConfig, IdmapMiddleware, IdMapping, IdRange

from vfsframe import ops
from vfsframe.chain import ShareChain

from .helpers import ROOT, Fs, memory_chain, raises_errno

NAMESPACE = {
    "uid_map": [{"guest": 0, "host": 100000, "count": 65536}],
    "gid_map": [{"guest": 0, "host": 200000, "count": 1000}, {"guest": 5000, "host": 5000}],
}


def mapped(**config: Any) -> tuple[Fs, Fs]:
    """(the guest's view through idmap, the host's view of the same backend)."""
    chain = memory_chain([IdmapMiddleware(IdmapConfig(**(config or NAMESPACE)))])
    return Fs(chain), Fs(ShareChain(chain.backend, []))


def test_range_lookup_both_ways() -> None:
    mapping = IdMapping(
        [IdRange(guest=0, host=1000, count=10), IdRange(guest=100, host=50, count=5)], 65534
    )
    assert [mapping.to_host(i) for i in (0, 9, 10, 99, 100, 104, 105)] == [
        1000, 1009, None, None, 50, 54, None,
    ]  # fmt: skip
    assert [mapping.to_guest(i) for i in (49, 50, 54, 999, 1000, 1009, 1010)] == [
        None, 100, 104, None, 0, 9, None,
    ]  # fmt: skip
    assert mapping.host_or_overflow(10) == 65534
    identity = IdMapping([], 65534)
    assert identity.to_host(123) == 123 and identity.to_guest(7) == 7


def test_callers_act_with_host_ids_and_see_guest_ids() -> None:
    guest, host = mapped()
    guest.as_(ops.Context(uid=1000, gid=5000, pid=1)).put("/f", b"x")
    assert (host.stat("/f").st_uid, host.stat("/f").st_gid) == (101000, 5000)
    attr = guest.stat("/f")
    assert (attr.st_uid, attr.st_gid) == (1000, 5000)
    listed = {e.name: e.attr for e in guest.entries("/")}
    assert (listed["f"].st_uid, listed["f"].st_gid) == (1000, 5000)
    guest.mkdir("/d")
    assert (host.stat("/d").st_uid, host.stat("/d").st_gid) == (100000, 200000)
    assert guest.stat("/d").st_uid == 0


def test_unmapped_ids_show_and_act_as_overflow() -> None:
    guest, host = mapped()
    host.put("/hosts", b"")  # owned by host root, which no range maps
    attr = guest.stat("/hosts")
    assert (attr.st_uid, attr.st_gid) == (65534, 65534)
    guest.as_(ops.Context(uid=70000, gid=70000)).mkdir("/outsider")
    assert (host.stat("/outsider").st_uid, host.stat("/outsider").st_gid) == (65534, 65534)


def test_chown_maps_guest_to_host_and_refuses_unmapped_ids() -> None:
    # Guest root is host root here: only root may give a file away.
    guest, host = mapped(
        uid_map=[{"guest": 0, "host": 0}, {"guest": 1, "host": 100001, "count": 65535}],
        gid_map=[{"guest": 0, "host": 0}, {"guest": 5000, "host": 5000}],
    )
    guest.put("/f", b"")
    attr = guest.setattr("/f", uid=42, gid=5000)
    assert (attr.st_uid, attr.st_gid) == (42, 5000)
    assert (host.stat("/f").st_uid, host.stat("/f").st_gid) == (100042, 5000)
    with raises_errno(errno.EINVAL):
        guest.setattr("/f", uid=65536)


def test_create_and_link_results_are_mapped() -> None:
    guest, _ = mapped()
    _, attr = guest.create("/c")
    assert attr.st_uid == 0
    assert guest.link("/c", "/l").st_uid == 0
    assert guest.symlink("/s", "c").st_uid == 0


def test_overflow_ids_are_configurable() -> None:
    guest, host = mapped(uid_map=[{"guest": 0, "host": 1, "count": 1}], overflow_uid=99)
    host.put("/f", b"")
    assert guest.stat("/f").st_uid == 99


@pytest.mark.parametrize(
    ("uid_map", "where"),
    [
        ([{"guest": 0, "host": 0, "count": 10}, {"guest": 5, "host": 100, "count": 10}], ()),
        ([{"guest": 0, "host": 0, "count": 10}, {"guest": 50, "host": 5, "count": 1}], ()),
        ([{"guest": 0, "host": 0, "count": 0}], (0, "count")),
        ([{"guest": -1, "host": 0}], (0, "guest")),
    ],
)
def test_bad_maps_are_refused(uid_map: list[dict[str, int]], where: tuple[Any, ...]) -> None:
    with pytest.raises(ValidationError) as info:
        IdmapConfig(uid_map=uid_map)
    assert info.value.errors()[0]["loc"][: 1 + len(where)] == ("uid_map", *where)


def test_ctx_object_of_the_session_is_not_edited() -> None:
    guest, _ = mapped()
    ctx = ops.Context(uid=5, gid=5)
    guest.chain.getattr(ops.GetattrRequest(ctx, "/"))
    assert (ctx.uid, ctx.gid) == (5, 5)
    assert ROOT.uid == 0
