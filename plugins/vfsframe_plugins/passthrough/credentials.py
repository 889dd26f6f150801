"""Creating files as the caller: per-thread fsuid/fsgid and umask.

Linux keeps the filesystem ids per thread, so a worker thread may switch to the guest
caller's uid/gid while it creates a file and switch back afterwards, without disturbing the
other workers. The host kernel then gives the file that owner, applies setgid directories
and refuses what the caller could not do. The umask lives in the fs_struct, which threads
share; each worker unshares its own (CLONE_FS) once, so that it can set the umask to 0 and
apply the request's umask itself (the session negotiates FUSE_DONT_MASK).
"""

from __future__ import annotations

import logging
import os
import threading

from vfsframe import ops

from . import syscalls

log = logging.getLogger(__name__)


class Credentials:
    def __init__(self, preserve_ownership: bool) -> None:
        self.switch_ids = preserve_ownership and os.geteuid() == 0
        if preserve_ownership and not self.switch_ids:
            log.warning("passthrough: preserve_ownership needs root; new files are ours")
        self._thread = threading.local()

    def _own_umask(self) -> bool:
        if getattr(self._thread, "unshared", None) is None:
            try:
                syscalls.unshare_fs()
                self._thread.unshared = True
            except OSError as exc:
                log.warning("passthrough: unshare(CLONE_FS) failed: %s", exc)
                self._thread.unshared = False
        return bool(self._thread.unshared)

    def creating(self, ctx: ops.Context) -> Creating:
        """``with credentials.creating(ctx)``: create as ``ctx``'s ids (when configured) with
        no process umask interfering."""
        return Creating(self, ctx)

    @staticmethod
    def mode(ctx: ops.Context, mode: int) -> int:
        """Permission bits of a new node: the request's umask applied."""
        return mode & 0o7777 & ~ctx.umask


class Creating:
    """What ``Credentials.creating`` returns (a class rather than @contextlib.contextmanager,
    as resolve.ParentDirectory says why)."""

    __slots__ = ("_credentials", "_ctx", "_previous_umask", "_switched")

    def __init__(self, credentials: Credentials, ctx: ops.Context) -> None:
        self._credentials = credentials
        self._ctx = ctx
        self._previous_umask: int | None = None
        self._switched = False

    def __enter__(self) -> None:
        credentials, ctx = self._credentials, self._ctx
        if credentials._own_umask():
            self._previous_umask = os.umask(0)
        if credentials.switch_ids and (ctx.uid != 0 or ctx.gid != 0):
            syscalls.setfsgid(ctx.gid)
            syscalls.setfsuid(ctx.uid)
            self._switched = True

    def __exit__(self, *exc_info: object) -> None:
        if self._switched:
            syscalls.setfsuid(0)  # first: it brings the file capabilities back
            syscalls.setfsgid(0)
        if self._previous_umask is not None:
            os.umask(self._previous_umask)
