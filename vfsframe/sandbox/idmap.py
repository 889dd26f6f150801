"""uid/gid maps for a user namespace: the server runs as an unprivileged host user.

A mapping is written as virtiofsd writes it, ``:namespace_id:host_id:count:`` (the outer
colons are optional). The server becomes namespace id 0, so with ``:0:100000:65536:`` it
runs as host uid 100000, and a guest uid 1000 it creates files as lands as host uid 101000.
Only a process privileged in the parent namespace may write a map of more than its own id,
so a short-lived helper that stays outside writes them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from . import libc


@dataclass(frozen=True)
class IdMapping:
    inside: int
    outside: int
    count: int

    @classmethod
    def parse(cls, text: str) -> IdMapping:
        parts = text.strip().strip(":").split(":")
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            raise ValueError(
                f"{text!r} is not a mapping; write ':namespace_id:host_id:count:', "
                "e.g. ':0:100000:65536:'"
            )
        inside, outside, count = (int(p) for p in parts)
        if count < 1 or max(inside, outside) + count > 1 << 32:
            raise ValueError(f"{text!r}: count must be at least 1 and ids stay below 2^32")
        return cls(inside, outside, count)

    def __str__(self) -> str:
        return f":{self.inside}:{self.outside}:{self.count}:"


def map_text(mappings: Iterable[IdMapping]) -> str:
    """The contents of /proc/PID/uid_map (or gid_map) for ``mappings``."""
    return "".join(f"{m.inside} {m.outside} {m.count}\n" for m in mappings)


def enter_user_namespace(uid_map: Iterable[IdMapping], gid_map: Iterable[IdMapping]) -> None:
    """Move this (single-threaded) process into a new user namespace with these maps: full
    capabilities inside it, none outside. ``become_namespace_root`` then switches ids."""
    uids, gids = map_text(uid_map), map_text(gid_map)
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    target = os.getpid()
    helper = os.fork()
    if helper == 0:  # the helper: still in the parent namespace, privileged there
        status = 1
        try:
            os.close(ready_w)
            os.close(done_r)
            if os.read(ready_r, 1) == b"1":
                _write_maps(target, uids, gids)
                status = 0
        except OSError as exc:
            os.write(2, f"vfsframe serve: writing the id maps failed: {exc}\n".encode())
        finally:
            os._exit(status)
    os.close(ready_r)
    os.close(done_r)
    os.close(done_w)
    try:
        libc.unshare(libc.CLONE_NEWUSER)
        os.write(ready_w, b"1")
    finally:
        os.close(ready_w)
        _, status = os.waitpid(helper, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise OSError("the uid/gid maps could not be written (see the message above)")


def become_namespace_root(uid_map: Iterable[IdMapping], gid_map: Iterable[IdMapping]) -> None:
    """Switch to id 0 of the user namespace: from now on the host sees the mapped ids.
    (Until then the process keeps its host ids, with capabilities only inside.)"""
    if list(gid_map):
        os.setresgid(0, 0, 0)
        os.setgroups([])
    if list(uid_map):
        os.setresuid(0, 0, 0)


def _write_maps(pid: int, uids: str, gids: str) -> None:
    if uids:
        with open(f"/proc/{pid}/uid_map", "w") as f:
            f.write(uids)
    if gids:
        with open(f"/proc/{pid}/gid_map", "w") as f:
            f.write(gids)
