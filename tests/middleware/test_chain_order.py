"""The order of the share chain, pinned for every operation (as nbdkit's test-layers).

Three recording middleware around a recording backend: every hook must enter them outermost
first (config order), reach the backend once, and leave them in reverse order, on success and
on failure alike. Then the built-in middleware in a chain: a cache hit skips the backend only.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Generator
from types import SimpleNamespace
from typing import Any

import pytest
from vfsframe_plugins._opclasses import install_wrappers
from vfsframe_plugins.acl import AclConfig, AclMiddleware
from vfsframe_plugins.cache import CacheConfig, CacheMiddleware
from vfsframe_plugins.idmap import IdmapConfig, IdmapMiddleware
from vfsframe_plugins.log import LogConfig, LogMiddleware
from vfsframe_plugins.metrics import MetricsConfig, MetricsMiddleware

from vfsframe import ops
from vfsframe.chain import ShareChain
from vfsframe.hookspecs import OPERATIONS

from .helpers import ROOT, Fs, memory_chain

ANSWER = object()


class Journal:
    def __init__(self) -> None:
        self.events: list[str] = []
        self._lock = threading.Lock()

    def add(self, event: str) -> None:
        with self._lock:
            self.events.append(event)

    def take(self) -> list[str]:
        events, self.events = self.events, []
        return events


class Recorder:
    """A middleware that notes entry and exit of every hook."""

    def __init__(self, name: str, journal: Journal) -> None:
        self.name = name
        self.journal = journal


def _recording(op: str) -> Any:
    def wrapper(self: Recorder, req: Any) -> Generator[None, Any, Any]:
        self.journal.add(f"{self.name}>{op}")
        try:
            result = yield
        except OSError as exc:
            self.journal.add(f"{self.name}<{op}!{errno.errorcode[exc.errno]}")
            raise
        self.journal.add(f"{self.name}<{op}")
        return result

    return wrapper


install_wrappers(Recorder, _recording)


class RecordingBackend:
    def __init__(self, journal: Journal, fail: bool = False) -> None:
        self.journal = journal
        self.fail = fail


def _backend_method(op: str) -> Any:
    def method(self: RecordingBackend, req: Any) -> Any:
        self.journal.add(f"backend:{op}")
        if self.fail:
            raise OSError(errno.EIO, "failing on purpose")
        return ANSWER

    method.__name__ = f"vfs_{op}"
    return method


for _op in OPERATIONS:
    setattr(RecordingBackend, f"vfs_{_op}", _backend_method(_op))


@pytest.mark.parametrize("op", OPERATIONS)
def test_every_operation_passes_the_layers_in_config_order(op: str) -> None:
    journal = Journal()
    chain = ShareChain(
        RecordingBackend(journal), [Recorder(name, journal) for name in ("a", "b", "c")]
    )
    assert getattr(chain, op)(SimpleNamespace(ctx=ROOT)) is ANSWER
    assert journal.take() == [
        f"a>{op}", f"b>{op}", f"c>{op}", f"backend:{op}", f"c<{op}", f"b<{op}", f"a<{op}",
    ]  # fmt: skip


@pytest.mark.parametrize("op", OPERATIONS)
def test_errors_unwind_the_layers_in_reverse_order(op: str) -> None:
    journal = Journal()
    chain = ShareChain(
        RecordingBackend(journal, fail=True), [Recorder(name, journal) for name in ("a", "b")]
    )
    with pytest.raises(OSError):
        getattr(chain, op)(SimpleNamespace(ctx=ROOT))
    assert journal.take() == [
        f"a>{op}", f"b>{op}", f"backend:{op}", f"b<{op}!EIO", f"a<{op}!EIO",
    ]  # fmt: skip


def _all_five(journal: Journal) -> list[object]:
    return [
        Recorder("outer", journal),
        LogMiddleware(LogConfig(ops=["write"], path=os.devnull)),
        MetricsMiddleware(MetricsConfig(listen=None)),
        AclMiddleware(AclConfig(rules=[{"path": "/secret/**", "effect": "hide"}])),
        Recorder("middle", journal),
        CacheMiddleware(CacheConfig()),
        IdmapMiddleware(IdmapConfig()),
        Recorder("inner", journal),
    ]


def test_cache_hit_skips_only_the_backend() -> None:
    journal = Journal()
    chain = memory_chain(_all_five(journal))
    fs = Fs(chain)
    fs.put("/f", b"data")
    journal.take()
    fs.stat("/f")  # a miss: the backend answers and the cache keeps it
    fs.stat("/f")  # a hit
    assert journal.take() == [
        "outer>getattr", "middle>getattr", "inner>getattr", "inner<getattr", "middle<getattr",
        "outer<getattr",
    ] * 2  # fmt: skip
    cache = chain.middleware[5]
    assert isinstance(cache, CacheMiddleware)
    assert cache.hits["getattr"] == 1
    chain.close()


def test_a_refusal_stops_at_the_refusing_layer() -> None:
    journal = Journal()
    chain = memory_chain(_all_five(journal))
    fs = Fs(chain)
    with pytest.raises(FileNotFoundError):
        fs.mkdir("/secret")  # hidden: ENOENT from acl before anything beneath it runs
    assert journal.take() == ["outer>mkdir", "outer<mkdir!ENOENT"]
    chain.close()


def test_wrappers_see_the_original_request_after_the_call() -> None:
    """idmap rewrites ctx for the layers beneath it and restores it for those above."""
    seen: list[tuple[str, int]] = []

    class Peek:
        def __init__(self, name: str) -> None:
            self.name = name

    def peeking(op: str) -> Any:
        def wrapper(self: Peek, req: Any) -> Generator[None, Any, Any]:
            seen.append((f"{self.name}>", req.ctx.uid))
            result = yield
            seen.append((f"{self.name}<", req.ctx.uid))
            return result

        return wrapper

    install_wrappers(Peek, peeking, ["getattr"])
    idmap = IdmapMiddleware(IdmapConfig(uid_map=[{"guest": 0, "host": 5000, "count": 10}]))
    chain = memory_chain([Peek("above"), idmap, Peek("below")])
    chain.getattr(ops.GetattrRequest(ops.Context(uid=3), "/"))
    assert seen == [("above>", 3), ("below>", 5003), ("below<", 5003), ("above<", 3)]
