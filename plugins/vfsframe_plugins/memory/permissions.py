"""The permission rules the backend applies itself (see docs/backends/memory.md).

The request context carries one gid and no supplementary groups, so "in the group" means
``ctx.gid == inode.gid``. uid 0 stands for a caller with every capability.
"""

from __future__ import annotations

import os
import stat

from vfsframe import ops

from .inodes import Inode


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
