"""One layer of an overlay: a child filesystem (a ShareChain) and what the overlay asks of it."""

from __future__ import annotations

import errno
import stat
from collections.abc import Callable
from typing import Any

from vfsframe import ops
from vfsframe.hookspecs import OPERATIONS

# The overlay's own bookkeeping (whiteouts, copy-up, listings) runs with full rights, like
# overlayfs using the mounter's credentials; user-visible operations use the caller's.
INTERNAL = ops.Context(uid=0, gid=0, pid=0, umask=0)

_ABSENT = (errno.ENOENT, errno.ENOTDIR)
# Upper-layer operations after which cached directory resolutions may be wrong: those on
# directories always; those on other files only when they add or remove an overlay marker
# (a whiteout or opaque file changes what the directories around it contain).
DIRECTORY_OPS = ("mkdir", "rmdir", "rename")
FILE_OPS = ("mknod", "symlink", "create", "unlink", "link")


def as_attr(attr: Any, ino: int) -> ops.Attr:
    """A copy of a layer's attributes (Attr or os.stat_result) carrying the overlay's st_ino."""
    return ops.Attr(
        st_ino=ino,
        st_mode=attr.st_mode,
        st_nlink=attr.st_nlink,
        st_uid=attr.st_uid,
        st_gid=attr.st_gid,
        st_rdev=attr.st_rdev,
        st_size=attr.st_size,
        st_blocks=attr.st_blocks,
        st_blksize=attr.st_blksize,
        st_atime_ns=attr.st_atime_ns,
        st_mtime_ns=attr.st_mtime_ns,
        st_ctime_ns=attr.st_ctime_ns,
    )


class WatchedChain:
    """A chain that calls ``changed`` after every operation that may change how directories
    resolve (successful or not: a failed rename may have done half its work in a backend).
    Other operations are the chain's own bound callables: no cost added."""

    def __init__(self, chain: Any, changed: Callable[[], None]) -> None:
        self.inner = chain
        for op in OPERATIONS:
            setattr(self, op, getattr(chain, op))
        for op in DIRECTORY_OPS:
            setattr(self, op, _watched(getattr(chain, op), changed, None))
        for op in FILE_OPS:
            setattr(self, op, _watched(getattr(chain, op), changed, is_marker))

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()


def is_marker(req: Any) -> bool:
    path = req.new if isinstance(req, ops.LinkRequest) else req.path
    return path.rpartition("/")[2].startswith(".wh.")


def _watched(
    call: Callable[[Any], Any], changed: Callable[[], None], only: Callable[[Any], bool] | None
) -> Callable[[Any], Any]:
    def watched(req: Any) -> Any:
        try:
            return call(req)
        finally:
            if only is None or only(req):
                changed()

    return watched


class Layer:
    """``index`` 0 is the upper layer when there is one; lower layers follow, topmost first."""

    def __init__(self, index: int, chain: Any, writable: bool) -> None:
        self.index = index
        self.chain = chain
        self.writable = writable

    def __repr__(self) -> str:
        return f"Layer({self.index}, {'upper' if self.writable else 'lower'})"

    def stat(self, path: str) -> Any | None:
        """The entry's attributes, or None when the layer has no such name."""
        try:
            return self.chain.getattr(ops.GetattrRequest(INTERNAL, path))
        except OSError as exc:
            if exc.errno in _ABSENT:
                return None
            raise

    def xattr(self, path: str, name: str) -> bytes | None:
        """An extended attribute's value, or None when absent or unreadable here."""
        try:
            return bytes(self.chain.getxattr(ops.GetxattrRequest(INTERNAL, path, name)))
        except OSError:
            return None

    def is_dir(self, path: str) -> bool:
        attr = self.stat(path)
        return attr is not None and stat.S_ISDIR(attr.st_mode)

    def entries(self, path: str) -> list[ops.DirEntry]:
        fh = self.chain.opendir(ops.OpendirRequest(INTERNAL, path))
        try:
            return list(self.chain.readdir(ops.ReaddirRequest(INTERNAL, path, fh)))
        finally:
            self.chain.releasedir(ops.ReleasedirRequest(INTERNAL, path, fh))
