"""The `idmap` middleware: guest ids in, host ids to the backend, guest ids back out."""

from __future__ import annotations

import dataclasses
import errno
from collections.abc import Generator
from typing import Any

from vfsframe import ops
from vfsframe.hookspecs import hookimpl
from vfsframe.plugin import Middleware
from vfsframe_plugins._opclasses import as_attr, install_wrappers

from .config import IdmapConfig
from .mapping import IdMapping

# Operations whose answer is an inode's attributes, shown to the guest with guest ids.
_ATTR_RESULTS = frozenset({"getattr", "setattr", "symlink", "mknod", "mkdir", "link"})


class IdmapMiddleware(Middleware):
    """Every request runs with the caller's host ids; every attribute comes back in guest ids.

    The request's ``ctx`` is replaced, not edited: the session reuses one Context for the
    calls it makes on behalf of one FUSE request. Middleware outside this one see guest ids
    before and after the call (the request is restored).
    """

    def __init__(self, config: IdmapConfig) -> None:
        self.config = config
        self.uids = IdMapping(config.uid_map, config.overflow_uid)
        self.gids = IdMapping(config.gid_map, config.overflow_gid)

    def host_context(self, ctx: ops.Context) -> ops.Context:
        return dataclasses.replace(
            ctx, uid=self.uids.host_or_overflow(ctx.uid), gid=self.gids.host_or_overflow(ctx.gid)
        )

    def guest_attr(self, attr: Any) -> Any:
        if attr is None:
            return attr
        uid = self.uids.guest_or_overflow(attr.st_uid)
        gid = self.gids.guest_or_overflow(attr.st_gid)
        if uid == attr.st_uid and gid == attr.st_gid:
            return attr
        shown = as_attr(attr)  # the backend's object may be its own inode record: copy
        shown.st_uid, shown.st_gid = uid, gid
        return shown

    def guest_result(self, op: str, result: Any) -> Any:
        if op in _ATTR_RESULTS:
            return self.guest_attr(result)
        if op == "create":
            handle, attr = result
            return handle, self.guest_attr(attr)
        if op == "readdir":
            return [
                entry if entry.attr is None else entry._replace(attr=self.guest_attr(entry.attr))
                for entry in result
            ]
        return result

    @hookimpl(wrapper=True)
    def vfs_setattr(self, req: ops.SetattrRequest) -> Generator[None, Any, Any]:
        # chown to an id the map cannot express is refused, as in a user namespace.
        uid, gid, ctx = req.uid, req.gid, req.ctx
        if uid is not None:
            req.uid = _mapped(self.uids.to_host(uid), "uid", uid)
        if gid is not None:
            req.gid = _mapped(self.gids.to_host(gid), "gid", gid)
        req.ctx = self.host_context(ctx)
        try:
            result = yield
        finally:
            req.uid, req.gid, req.ctx = uid, gid, ctx
        return self.guest_attr(result)


def _mapped(value: int | None, kind: str, guest_id: int) -> int:
    if value is None:
        raise OSError(errno.EINVAL, f"guest {kind} {guest_id} has no host {kind} in the map")
    return value


def _mapping_wrapper(op: str) -> Any:
    def wrapper(self: IdmapMiddleware, req: Any) -> Generator[None, Any, Any]:
        ctx = req.ctx
        req.ctx = self.host_context(ctx)
        try:
            result = yield
        finally:
            req.ctx = ctx
        return self.guest_result(op, result)

    return wrapper


install_wrappers(IdmapMiddleware, _mapping_wrapper)
