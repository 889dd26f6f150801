"""The typed, path-based operations that flow through a share's plugin chain.

Every filesystem operation is one request object. The session builds it from a FUSE
message; middleware may rewrite its fields (path, ids, flags) before the backend sees it;
the backend answers it. Paths are absolute within the share ("/" is its root) and are
`str` decoded with ``os.fsdecode`` (surrogateescape), so any byte name round-trips.

A backend reports failure by raising ``OSError(errno, ...)``; the errno reaches the caller.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

# Marker values for SetattrRequest.atime_ns / mtime_ns, as utimensat(2) names them.
UTIME_NOW = -1


@dataclass(slots=True)
class Context:
    """Who asked: the caller's ids as the kernel reports them, and its umask where known.

    ``interrupt`` is set for requests that may block (SETLKW): the kernel interrupted the
    caller (a signal), so a backend waiting on its behalf should give up with EINTR.
    """

    uid: int = 0
    gid: int = 0
    pid: int = 0
    umask: int = 0o022
    interrupt: threading.Event | None = None

    def check_interrupted(self) -> None:
        """Raise EINTR if the caller was interrupted; call it from blocking waits."""
        if self.interrupt is not None and self.interrupt.is_set():
            raise InterruptedError(errno.EINTR, "interrupted")


ROOT_CONTEXT = Context()


@dataclass(slots=True)
class Attr:
    """File attributes, with the field names of ``os.stat_result`` so either can be returned."""

    st_ino: int
    st_mode: int
    st_nlink: int = 1
    st_uid: int = 0
    st_gid: int = 0
    st_rdev: int = 0
    st_size: int = 0
    st_blocks: int = 0
    st_blksize: int = 4096
    st_atime_ns: int = 0
    st_mtime_ns: int = 0
    st_ctime_ns: int = 0


class DirEntry(NamedTuple):
    """One name in a directory listing. ``attr`` may be None; the session then asks getattr."""

    name: str
    ino: int
    mode: int  # only the S_IFMT bits are needed
    attr: Attr | os.stat_result | None = None


class StatFs(NamedTuple):
    bsize: int
    frsize: int
    blocks: int
    bfree: int
    bavail: int
    files: int
    ffree: int
    namelen: int = 255


class Lock(NamedTuple):
    """A POSIX record lock: ``end`` is inclusive, as in struct fuse_file_lock."""

    start: int
    end: int
    type: int  # fcntl.F_RDLCK / F_WRLCK / F_UNLCK
    pid: int


def file_type(mode: int) -> int:
    return stat.S_IFMT(mode)


@dataclass(slots=True)
class Request:
    """Base of every operation request."""

    ctx: Context


@dataclass(slots=True)
class GetattrRequest(Request):
    """Attributes of ``path``; ``fh`` is the backend's handle when the kernel has one open."""

    path: str
    fh: Any = None


@dataclass(slots=True)
class SetattrRequest(Request):
    """Change the attributes that are not None. Times are ns since the epoch, or UTIME_NOW."""

    path: str
    fh: Any = None
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    size: int | None = None
    atime_ns: int | None = None
    mtime_ns: int | None = None
    ctime_ns: int | None = None
    kill_suid: bool = False


@dataclass(slots=True)
class ReadlinkRequest(Request):
    path: str


@dataclass(slots=True)
class SymlinkRequest(Request):
    path: str
    target: str


@dataclass(slots=True)
class MknodRequest(Request):
    """Create a non-directory node. ``mode`` holds the type bits; the umask is in ``ctx``."""

    path: str
    mode: int
    rdev: int = 0


@dataclass(slots=True)
class MkdirRequest(Request):
    path: str
    mode: int


@dataclass(slots=True)
class UnlinkRequest(Request):
    path: str


@dataclass(slots=True)
class RmdirRequest(Request):
    path: str


@dataclass(slots=True)
class RenameRequest(Request):
    """``flags``: 0, RENAME_NOREPLACE (1), RENAME_EXCHANGE (2) or RENAME_WHITEOUT (4)."""

    old: str
    new: str
    flags: int = 0


RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
RENAME_WHITEOUT = 4


@dataclass(slots=True)
class LinkRequest(Request):
    """Make ``new`` another name of ``old``."""

    old: str
    new: str


@dataclass(slots=True)
class OpenRequest(Request):
    """Open a file; returns the backend's handle (any object; None is allowed)."""

    path: str
    flags: int


@dataclass(slots=True)
class CreateRequest(Request):
    """Create and open a regular file; returns ``(handle, attr)``."""

    path: str
    flags: int
    mode: int


@dataclass(slots=True)
class ReadRequest(Request):
    """Read up to ``size`` bytes at ``offset``.

    A backend either returns the data (bytes-like, at most ``size`` long) or fills
    ``buffers`` (writable memoryviews that hold at least ``size`` bytes in all: guest memory
    under virtio-fs) and returns the number of bytes it wrote there. Filling ``buffers`` is
    the zero-copy path (``os.preadv`` fits it directly).
    """

    path: str
    fh: Any
    offset: int
    size: int
    buffers: Sequence[memoryview] = ()
    flags: int = 0


@dataclass(slots=True)
class WriteRequest(Request):
    """Write ``data`` (read-only memoryviews, scattered; ``os.pwritev`` takes them as they are)
    at ``offset``; returns the number of bytes written."""

    path: str
    fh: Any
    offset: int
    data: Sequence[memoryview]
    size: int
    # The writer's open flags (fuse_write_in.flags): O_APPEND here means append. They are 0
    # for page-cache writeback, which writes at ``offset`` through any handle.
    flags: int = 0
    write_flags: int = 0

    def payload(self) -> bytes:
        """The data as one bytes object: a copy, for backends that cannot take scatter lists."""
        return b"".join(self.data)


@dataclass(slots=True)
class FlushRequest(Request):
    """Called on every close(2) of a file descriptor of the open file."""

    path: str
    fh: Any
    lock_owner: int = 0


@dataclass(slots=True)
class ReleaseRequest(Request):
    """The last reference to an open file is gone; the handle will not be used again."""

    path: str
    fh: Any
    flags: int = 0


@dataclass(slots=True)
class FsyncRequest(Request):
    path: str
    fh: Any
    datasync: bool = False


@dataclass(slots=True)
class OpendirRequest(Request):
    path: str
    flags: int = 0


@dataclass(slots=True)
class ReaddirRequest(Request):
    """List a directory; returns an iterable of DirEntry, without "." and "..".

    The session takes the whole listing when the directory is opened (and again on rewind),
    so offsets stay valid however the directory changes meanwhile.
    """

    path: str
    fh: Any = None


@dataclass(slots=True)
class ReleasedirRequest(Request):
    path: str
    fh: Any


@dataclass(slots=True)
class FsyncdirRequest(Request):
    path: str
    fh: Any
    datasync: bool = False


@dataclass(slots=True)
class StatfsRequest(Request):
    path: str


@dataclass(slots=True)
class SetxattrRequest(Request):
    """``flags``: 0, XATTR_CREATE (1) or XATTR_REPLACE (2)."""

    path: str
    name: str
    value: bytes
    flags: int = 0


@dataclass(slots=True)
class GetxattrRequest(Request):
    """Returns the value (bytes); ENODATA when absent. The session handles size probing."""

    path: str
    name: str


@dataclass(slots=True)
class ListxattrRequest(Request):
    """Returns the names (list of str)."""

    path: str


@dataclass(slots=True)
class RemovexattrRequest(Request):
    path: str
    name: str


@dataclass(slots=True)
class AccessRequest(Request):
    """Check ``mask`` (os.R_OK | W_OK | X_OK, or F_OK) for ``ctx``; raise EACCES if denied."""

    path: str
    mask: int


@dataclass(slots=True)
class GetlkRequest(Request):
    """Test for a conflicting lock; returns the conflicting Lock, or one of type F_UNLCK."""

    path: str
    fh: Any
    owner: int
    lock: Lock


@dataclass(slots=True)
class SetlkRequest(Request):
    """Take or release a lock. ``wait``: block until granted (SETLKW). ``flock``: BSD
    flock(2) semantics rather than POSIX record locks."""

    path: str
    fh: Any
    owner: int
    lock: Lock
    wait: bool = False
    flock: bool = False


@dataclass(slots=True)
class FallocateRequest(Request):
    path: str
    fh: Any
    mode: int
    offset: int
    length: int


@dataclass(slots=True)
class LseekRequest(Request):
    """Only SEEK_DATA and SEEK_HOLE reach backends; returns the new offset."""

    path: str
    fh: Any
    offset: int
    whence: int


@dataclass(slots=True)
class CopyFileRangeRequest(Request):
    """Copy ``length`` bytes between two open files; returns the number copied."""

    path_in: str
    fh_in: Any
    offset_in: int
    path_out: str
    fh_out: Any
    offset_out: int
    length: int
    flags: int = 0


@dataclass(slots=True)
class SyncfsRequest(Request):
    pass


@dataclass(slots=True)
class DestroyRequest(Request):
    """The filesystem is being unmounted: flush what is pending."""
