"""Creating files as the caller: per-thread fsuid/fsgid and umask.

Linux keeps the filesystem ids per thread, so a worker thread may switch to the guest
caller's uid/gid while it creates a file and switch back afterwards, without disturbing the
other workers. The host kernel then gives the file that owner, applies setgid directories
and refuses what the caller could not do. The umask lives in the fs_struct, which threads
share; each worker unshares its own (CLONE_FS) once, so that it can set the umask to 0 and
apply the request's umask itself (the session negotiates FUSE_DONT_MASK).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator

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

    @contextlib.contextmanager
    def creating(self, ctx: ops.Context) -> Iterator[None]:
        """Create as ``ctx``'s ids (when configured) with no process umask interfering."""
        own_umask = self._own_umask()
        previous_umask = os.umask(0) if own_umask else None
        switched = False
        if self.switch_ids and (ctx.uid != 0 or ctx.gid != 0):
            syscalls.setfsgid(ctx.gid)
            syscalls.setfsuid(ctx.uid)
            switched = True
        try:
            yield
        finally:
            if switched:
                syscalls.setfsuid(0)  # first: it brings the file capabilities back
                syscalls.setfsgid(0)
            if previous_umask is not None:
                os.umask(previous_umask)

    @staticmethod
    def mode(ctx: ops.Context, mode: int) -> int:
        """Permission bits of a new node: the request's umask applied."""
        return mode & 0o7777 & ~ctx.umask
