"""Inode numbers as the guest sees them.

The session keys nodes by ``st_ino`` alone. Under one host file system that is the host's
inode number, unchanged. A file system mounted below the root has its own numbering, which
can collide with the root's; its numbers get a per-device tag in the top 8 bits (real file
systems do not hand out inode numbers that large), so names on different devices never
share a node.
"""

from __future__ import annotations

import errno
import os
import threading

from vfsframe import ops

_TAG_SHIFT = 56
_MAX_TAGS = 255


class InodeNumbers:
    def __init__(self, root_dev: int) -> None:
        self.root_dev = root_dev
        self._tags: dict[int, int] = {}
        self._lock = threading.Lock()

    def _tag(self, dev: int) -> int:
        tag = self._tags.get(dev)
        if tag is None:
            with self._lock:
                tag = self._tags.get(dev)
                if tag is None:
                    if len(self._tags) >= _MAX_TAGS:
                        raise OSError(errno.EXDEV, "too many file systems below the share root")
                    tag = self._tags[dev] = len(self._tags) + 1
        return tag

    def attr(self, st: os.stat_result) -> os.stat_result | ops.Attr:
        """What getattr answers: the host's stat, its inode number tagged off the root fs."""
        if st.st_dev == self.root_dev:
            return st
        return ops.Attr(
            st_ino=st.st_ino ^ (self._tag(st.st_dev) << _TAG_SHIFT),
            st_mode=st.st_mode,
            st_nlink=st.st_nlink,
            st_uid=st.st_uid,
            st_gid=st.st_gid,
            st_rdev=st.st_rdev,
            st_size=st.st_size,
            st_blocks=st.st_blocks,
            st_blksize=st.st_blksize,
            st_atime_ns=st.st_atime_ns,
            st_mtime_ns=st.st_mtime_ns,
            st_ctime_ns=st.st_ctime_ns,
        )

    def key(self, st: os.stat_result) -> tuple[int, int]:
        """The host identity of an inode, for tables that must not confuse two files."""
        return st.st_dev, st.st_ino
