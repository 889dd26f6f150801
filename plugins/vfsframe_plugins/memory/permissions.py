"""The permission and ownership rules the backend applies itself (docs/backends/memory.md):
access(2), sticky directories, and what chmod, chown and utimens may do and clear.

The request context carries one gid and no supplementary groups, so "in the group" means
``ctx.gid == inode.gid``. uid 0 stands for a caller with every capability.
"""

from __future__ import annotations

import errno
import os
import stat

from vfsframe import ops

from .errors import fs_error
from .inodes import Directory, Inode


def in_group(ctx: ops.Context, gid: int) -> bool:
    return ctx.gid == gid


def may_access(inode: Inode, ctx: ops.Context, mask: int) -> bool:
    """access(2): the owner, group or other bits, whichever class the caller is in."""
    mask &= os.R_OK | os.W_OK | os.X_OK
    if ctx.uid == 0:
        # root may do anything, except execute a file that no one may execute.
        if mask & os.X_OK and not stat.S_ISDIR(inode.mode):
            return bool(inode.mode & 0o111)
        return True
    if ctx.uid == inode.uid:
        granted = (inode.mode >> 6) & 0o7
    elif in_group(ctx, inode.gid):
        granted = (inode.mode >> 3) & 0o7
    else:
        granted = inode.mode & 0o7
    return mask & granted == mask


def sticky_forbids(directory: Inode, inode: Inode, ctx: ops.Context) -> bool:
    """In a sticky directory only the file's owner, the directory's owner or root may
    remove or rename a name."""
    return (
        bool(directory.mode & stat.S_ISVTX)
        and ctx.uid != 0
        and ctx.uid != inode.uid
        and ctx.uid != directory.uid
    )


def is_owner(inode: Inode, ctx: ops.Context) -> bool:
    return ctx.uid == 0 or ctx.uid == inode.uid


def apply_chown(node: Inode, req: ops.SetattrRequest) -> None:
    ctx = req.ctx
    if ctx.uid != 0:
        owner = ctx.uid == node.uid
        if req.uid is not None and not (owner and req.uid == node.uid):
            raise fs_error(errno.EPERM, req.path)
        if req.gid is not None and not (owner and req.gid in (node.gid, ctx.gid)):
            raise fs_error(errno.EPERM, req.path)
    if not isinstance(node, Directory):
        # chown drops setuid for every caller (Linux since 2.2.13); setgid when the
        # file is group-executable or the caller is outside the file's group.
        mode = node.mode & ~stat.S_ISUID
        if mode & stat.S_IXGRP or (ctx.uid != 0 and not in_group(ctx, node.gid)):
            mode &= ~stat.S_ISGID
        node.mode = mode
    if req.uid is not None:
        node.uid = req.uid
    if req.gid is not None:
        node.gid = req.gid


def apply_chmod(node: Inode, req: ops.SetattrRequest) -> None:
    assert req.mode is not None
    if not is_owner(node, req.ctx):
        raise fs_error(errno.EPERM, req.path)
    perms = req.mode & 0o7777
    if req.ctx.uid != 0 and not in_group(req.ctx, node.gid):
        perms &= ~stat.S_ISGID
    node.mode = stat.S_IFMT(node.mode) | perms


def apply_times(node: Inode, req: ops.SetattrRequest, now: int) -> None:
    explicit = any(t not in (None, ops.UTIME_NOW) for t in (req.atime_ns, req.mtime_ns))
    if not is_owner(node, req.ctx):
        # utimensat(2): setting explicit times needs ownership; "now" needs write access.
        if explicit:
            raise fs_error(errno.EPERM, req.path)
        if not may_access(node, req.ctx, os.W_OK):
            raise fs_error(errno.EACCES, req.path)
    if req.atime_ns is not None:
        node.atime_ns = now if req.atime_ns == ops.UTIME_NOW else req.atime_ns
    if req.mtime_ns is not None:
        node.mtime_ns = now if req.mtime_ns == ops.UTIME_NOW else req.mtime_ns


def killed_privileges(mode: int) -> int:
    """``mode`` without setuid, and without setgid when group-executable (setgid without
    group execute marks mandatory locking and is kept, as Linux does)."""
    mode &= ~stat.S_ISUID
    if mode & stat.S_IXGRP:
        mode &= ~stat.S_ISGID
    return mode
