"""The share chain's hooks: one per filesystem operation. This is the plugin author's contract.

Each hook takes one mutable request object (``vfsframe.ops``) named ``req`` and is
``firstresult``: the first implementation to return something other than None answers.

- A **backend** is the terminal plugin: a plain implementation of every hook it supports.
  Subclass ``vfsframe.plugin.Backend``: its default for every hook raises ENOSYS, so a
  backend implements only what it can do. Hooks whose operation has no result (unlink,
  rename, ...) return None on success.
- A **middleware** wraps the backend: ``@hookimpl(wrapper=True)`` implementations that may
  rewrite ``req`` before ``result = yield``, and inspect, replace or raise after it. The
  share registers middleware so that the first listed in the config is the outermost.
- A middleware may **answer instead of the backend** (a cache hit) with a
  ``@hookimpl(tryfirst=True)`` plain implementation returning non-None; returning None
  lets the call go on to the backend. Every wrapper still wraps such an answer.
- Errors are ``OSError`` with an errno; anything else becomes EIO, logged once by the session.

Implementations may be called from several threads at once.
"""

from __future__ import annotations

from typing import Any

import pluggy

from vfsframe import ops

PROJECT = "vfsframe"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class ShareSpec:
    """Hook specifications; see the module docstring for the calling rules."""

    @hookspec(firstresult=True)
    def vfs_getattr(self, req: ops.GetattrRequest) -> ops.Attr | Any:
        """Attributes of ``req.path`` (an ``ops.Attr`` or ``os.stat_result``); also answers
        LOOKUP. Raise ENOENT when there is no such name. ``st_ino`` must be stable and
        identical for every name of one inode (hard links), unique among live inodes."""

    @hookspec(firstresult=True)
    def vfs_setattr(self, req: ops.SetattrRequest) -> ops.Attr | Any:
        """Apply the non-None fields of ``req`` and return the new attributes. ``size``
        truncates or extends; times may be ``ops.UTIME_NOW``."""

    @hookspec(firstresult=True)
    def vfs_readlink(self, req: ops.ReadlinkRequest) -> str:
        """The target of the symbolic link ``req.path``; EINVAL if it is not a symlink."""

    @hookspec(firstresult=True)
    def vfs_symlink(self, req: ops.SymlinkRequest) -> ops.Attr | Any:
        """Create a symbolic link at ``req.path`` pointing to ``req.target``."""

    @hookspec(firstresult=True)
    def vfs_mknod(self, req: ops.MknodRequest) -> ops.Attr | Any:
        """Create a regular file, FIFO, socket or device node (type in ``req.mode``)."""

    @hookspec(firstresult=True)
    def vfs_mkdir(self, req: ops.MkdirRequest) -> ops.Attr | Any:
        """Create a directory; apply ``req.ctx.umask`` to ``req.mode``."""

    @hookspec(firstresult=True)
    def vfs_unlink(self, req: ops.UnlinkRequest) -> None:
        """Remove a non-directory name."""

    @hookspec(firstresult=True)
    def vfs_rmdir(self, req: ops.RmdirRequest) -> None:
        """Remove an empty directory (ENOTEMPTY otherwise)."""

    @hookspec(firstresult=True)
    def vfs_rename(self, req: ops.RenameRequest) -> None:
        """Rename ``req.old`` to ``req.new`` honouring RENAME_NOREPLACE / RENAME_EXCHANGE
        (EINVAL for flags the backend does not support)."""

    @hookspec(firstresult=True)
    def vfs_link(self, req: ops.LinkRequest) -> ops.Attr | Any:
        """Create the hard link ``req.new`` to ``req.old``; return the inode's attributes."""

    @hookspec(firstresult=True)
    def vfs_open(self, req: ops.OpenRequest) -> Any:
        """Open a file and return a handle: any object the backend wants to see again in
        read/write/release (an int fd, an object, or None)."""

    @hookspec(firstresult=True)
    def vfs_create(self, req: ops.CreateRequest) -> tuple[Any, ops.Attr | Any]:
        """Create (O_EXCL honoured) and open a regular file: ``(handle, attributes)``."""

    @hookspec(firstresult=True)
    def vfs_read(self, req: ops.ReadRequest) -> bytes | bytearray | memoryview | int:
        """Read data: return it, or fill ``req.buffers`` and return the count (zero copy)."""

    @hookspec(firstresult=True)
    def vfs_write(self, req: ops.WriteRequest) -> int:
        """Write ``req.data`` at ``req.offset`` (O_APPEND files: at the end); return the count."""

    @hookspec(firstresult=True)
    def vfs_flush(self, req: ops.FlushRequest) -> None:
        """A file descriptor of the open file was closed."""

    @hookspec(firstresult=True)
    def vfs_release(self, req: ops.ReleaseRequest) -> None:
        """The open file is gone; free the handle."""

    @hookspec(firstresult=True)
    def vfs_fsync(self, req: ops.FsyncRequest) -> None:
        """Make the file's data (and metadata unless ``datasync``) durable."""

    @hookspec(firstresult=True)
    def vfs_opendir(self, req: ops.OpendirRequest) -> Any:
        """Open a directory; return a handle (or None)."""

    @hookspec(firstresult=True)
    def vfs_readdir(self, req: ops.ReaddirRequest) -> Any:
        """The directory's entries as an iterable of ``ops.DirEntry`` (no "." / "..")."""

    @hookspec(firstresult=True)
    def vfs_releasedir(self, req: ops.ReleasedirRequest) -> None:
        """The directory handle is gone."""

    @hookspec(firstresult=True)
    def vfs_fsyncdir(self, req: ops.FsyncdirRequest) -> None:
        """Make the directory durable."""

    @hookspec(firstresult=True)
    def vfs_statfs(self, req: ops.StatfsRequest) -> ops.StatFs:
        """Filesystem statistics."""

    @hookspec(firstresult=True)
    def vfs_setxattr(self, req: ops.SetxattrRequest) -> None:
        """Set an extended attribute (XATTR_CREATE: EEXIST; XATTR_REPLACE: ENODATA)."""

    @hookspec(firstresult=True)
    def vfs_getxattr(self, req: ops.GetxattrRequest) -> bytes:
        """The value of an extended attribute; ENODATA if absent."""

    @hookspec(firstresult=True)
    def vfs_listxattr(self, req: ops.ListxattrRequest) -> list[str]:
        """The names of the extended attributes."""

    @hookspec(firstresult=True)
    def vfs_removexattr(self, req: ops.RemovexattrRequest) -> None:
        """Remove an extended attribute; ENODATA if absent."""

    @hookspec(firstresult=True)
    def vfs_access(self, req: ops.AccessRequest) -> None:
        """Raise EACCES unless ``req.ctx`` may access the file as ``req.mask`` asks."""

    @hookspec(firstresult=True)
    def vfs_getlk(self, req: ops.GetlkRequest) -> ops.Lock:
        """The first lock conflicting with ``req.lock``, or ``req.lock`` typed F_UNLCK."""

    @hookspec(firstresult=True)
    def vfs_setlk(self, req: ops.SetlkRequest) -> None:
        """Acquire or release a lock; EAGAIN on conflict unless ``req.wait``."""

    @hookspec(firstresult=True)
    def vfs_fallocate(self, req: ops.FallocateRequest) -> None:
        """Allocate or punch space (FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE)."""

    @hookspec(firstresult=True)
    def vfs_lseek(self, req: ops.LseekRequest) -> int:
        """Offset of the next data (SEEK_DATA) or hole (SEEK_HOLE) at or after the offset."""

    @hookspec(firstresult=True)
    def vfs_copy_file_range(self, req: ops.CopyFileRangeRequest) -> int:
        """Copy bytes between open files without passing them through the kernel client."""

    @hookspec(firstresult=True)
    def vfs_syncfs(self, req: ops.SyncfsRequest) -> None:
        """Flush the whole filesystem."""

    @hookspec(firstresult=True)
    def vfs_destroy(self, req: ops.DestroyRequest) -> None:
        """The kernel unmounted the share (or the guest reset the device)."""


# The operation names, in the order above: "getattr", "setattr", ...
OPERATIONS: tuple[str, ...] = tuple(
    name.removeprefix("vfs_") for name in vars(ShareSpec) if name.startswith("vfs_")
)
