"""The `acl` middleware: allow, deny or hide operations by path, caller and op class."""

from __future__ import annotations

import errno
import logging
import re
import threading
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

from vfsframe import ops
from vfsframe.hookspecs import hookimpl
from vfsframe.plugin import Middleware
from vfsframe_plugins._opclasses import OpClass, checks, child_of, install_wrappers, is_mutating

from .config import AclConfig, Effect
from .pathglob import compile_glob

log = logging.getLogger("vfsframe.acl")

# Decisions are cached per (path, uid, gid, class); the rules never change after build.
_DECISION_CACHE_LIMIT = 65536


@dataclass(frozen=True, slots=True)
class CompiledRule:
    index: int
    pattern: re.Pattern[str]
    uids: frozenset[int] | None
    gids: frozenset[int] | None
    ops: frozenset[str] | None
    effect: Effect

    def matches(self, path: str, uid: int, gid: int, op_class: str) -> bool:
        return (
            (self.ops is None or op_class in self.ops)
            and (self.uids is None or uid in self.uids)
            and (self.gids is None or gid in self.gids)
            and self.pattern.match(path) is not None
        )


class AclMiddleware(Middleware):
    """Checks every request against the rules before the rest of the chain sees it.

    getattr (LOOKUP, stat) is refused only by *hide*: a deny of class "list" refuses
    opendir/readdir, never the lookup of a name, which the kernel needs before any other
    operation. Listings drop the names that are hidden from the caller.
    """

    def __init__(self, config: AclConfig) -> None:
        self.config = config
        self.readonly = config.readonly
        self.default: Effect = config.default
        self.rules = [
            CompiledRule(
                index,
                compile_glob(rule.path),
                frozenset(rule.uids) if rule.uids is not None else None,
                frozenset(rule.gids) if rule.gids is not None else None,
                frozenset(rule.ops) if rule.ops is not None else None,
                rule.effect,
            )
            for index, rule in enumerate(config.rules)
        ]
        self._decisions: dict[tuple[str, int, int, str], tuple[Effect, int]] = {}
        self._lock = threading.Lock()

    # -- decisions -----------------------------------------------------------------------

    def decide(self, path: str, ctx: ops.Context, op_class: str) -> tuple[Effect, int]:
        """The effect for this caller and class at ``path``, and the deciding rule's index
        (-1: the default)."""
        key = (path, ctx.uid, ctx.gid, op_class)
        found = self._decisions.get(key)
        if found is not None:
            return found
        decision: tuple[Effect, int] = (self.default, -1)
        for rule in self.rules:
            if rule.matches(path, ctx.uid, ctx.gid, op_class):
                decision = (rule.effect, rule.index)
                break
        with self._lock:
            if len(self._decisions) >= _DECISION_CACHE_LIMIT:
                self._decisions.clear()
            self._decisions[key] = decision
        return decision

    def check(self, op: str, req: Any) -> None:
        """Raise EROFS / EACCES / ENOENT if ``req`` is not allowed."""
        if self.readonly and is_mutating(op, req):
            self._refused(op, "", req.ctx, errno.EROFS, "read-only share")
        for path, op_class in checks(op, req):
            if not path:  # an open file with no name left: its open was checked
                continue
            effect, rule = self.decide(path, req.ctx, op_class)
            if effect == "allow":
                continue
            if effect == "hide":
                raise OSError(errno.ENOENT, "No such file or directory", path)
            if op == "getattr":
                continue  # lookups are only ever hidden, see the class docstring
            self._refused(op, path, req.ctx, errno.EACCES, _rule_name(rule), op_class)

    def hidden(self, path: str, ctx: ops.Context) -> bool:
        return self.decide(path, ctx, "list")[0] == "hide"

    def _refused(
        self,
        op: str,
        path: str,
        ctx: ops.Context,
        code: int,
        why: str,
        op_class: OpClass | str = "",
    ) -> None:
        log.warning(
            "acl: %s %s %s refused (%s%s) uid=%d gid=%d pid=%d",
            errno.errorcode[code],
            op,
            path or "-",
            why,
            f", class {op_class}" if op_class else "",
            ctx.uid,
            ctx.gid,
            ctx.pid,
        )
        raise OSError(code, f"{why}: {op} {path}".rstrip(), path or None)

    # -- hooks that need more than a check ---------------------------------------------------

    @hookimpl(wrapper=True)
    def vfs_readdir(self, req: ops.ReaddirRequest) -> Generator[None, Any, Any]:
        self.check("readdir", req)
        entries = yield
        ctx, directory = req.ctx, req.path
        if not self.rules or not directory:
            return entries
        return [entry for entry in entries if not self.hidden(child_of(directory, entry.name), ctx)]


def _rule_name(index: int) -> str:
    return "default" if index < 0 else f"rule {index}"


def _checking_wrapper(op: str) -> Any:
    def wrapper(self: AclMiddleware, req: Any) -> Generator[None, Any, Any]:
        self.check(op, req)
        return (yield)

    return wrapper


install_wrappers(AclMiddleware, _checking_wrapper)
