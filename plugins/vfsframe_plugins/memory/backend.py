"""MemoryBackend: every hook of the share chain answered from a tree of inodes in RAM.

One RLock guards the whole tree and all file data: a hook takes it once, does its work and
returns. Copies happen under it too; they are memcpy calls that hold the GIL anyway, so a
finer scheme would buy no parallelism. A blocking SETLKW waits on a condition built on the
same lock, which releases it while waiting.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import threading
import time
from collections.abc import Sequence
from typing import Any

from vfsframe import ops
from vfsframe.plugin import Backend

from .config import MemoryConfig
from .content import FileContent, as_bytes_view
from .errors import fs_error
from .handles import DirHandle, FileHandle
from .inodes import Directory, Inode, RegularFile, SpecialNode, Symlink
from .locks import RecordLocks
from .permissions import (
    apply_chmod,
    apply_chown,
    apply_times,
    killed_privileges,
    may_access,
    sticky_forbids,
)

NAME_MAX = 255
SYMLINK_MAX = 4095
XATTR_NAME_MAX = 255
XATTR_SIZE_MAX = 65536
MAX_FILE_SIZE = 2**63 - 1
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
# fuse_write_in.write_flags: the kernel asks the server to clear suid/sgid (killpriv v2).
FUSE_WRITE_KILL_SUIDGID = 1 << 2
_SPECIAL_TYPES = (stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR, stat.S_IFBLK)


def _check_name(name: str) -> None:
    # A str character is at most 4 bytes encoded: skip the encode for short names.
    if len(name) > NAME_MAX // 4 and len(os.fsencode(name)) > NAME_MAX:
        raise fs_error(errno.ENAMETOOLONG, name)


def _components(path: str) -> list[str]:
    return [name for name in path.split("/") if name]


def _total_bytes(data: Sequence[Any]) -> int:
    return sum(v.nbytes if type(v) is memoryview else as_bytes_view(v).nbytes for v in data)


# How often a blocked SETLKW looks whether its caller was interrupted (seconds).
LOCK_WAIT_POLL = 0.2
# Most bytes one copy_file_range call copies (callers loop on short copies).
MAX_COPY = 64 << 20


class MemoryBackend(Backend):
    """A complete POSIX filesystem in RAM (see docs/backends/memory.md)."""

    posix_locks = True
    flock_locks = True

    def __init__(self, config: MemoryConfig | None = None) -> None:
        self.config = config or MemoryConfig()
        self._capacity = int(self.config.capacity)
        self._lock = threading.RLock()
        self._lock_changed = threading.Condition(self._lock)
        self._closed = False
        # POSIX lock owner → the owner it waits for in SETLKW, for deadlock detection.
        self._waits_for: dict[int, int] = {}
        self._next_ino = 2
        self._inode_count = 1
        self._used = 0  # bytes of chunk storage held by all files
        now = time.time_ns()
        self._root = Directory(1, stat.S_IFDIR | 0o755, os.getuid(), os.getgid(), now)

    def close(self) -> None:
        # Wake lock waiters so that a shutdown is not held up by a SETLKW.
        with self._lock:
            self._closed = True
            self._lock_changed.notify_all()

    # -- tree helpers (call with the lock held) ------------------------------------------

    def _lookup(self, path: str) -> Inode:
        node: Inode = self._root
        for name in path.split("/"):
            if not name:
                continue
            if not isinstance(node, Directory):
                raise fs_error(errno.ENOTDIR, path)
            child = node.entries.get(name)
            if child is None:
                _check_name(name)
                raise fs_error(errno.ENOENT, path)
            node = child
        return node

    def _parent(self, path: str, root_errno: int = errno.EBUSY) -> tuple[Directory, str]:
        """The directory that holds the last name of ``path``, and that name."""
        names = _components(path)
        if not names:
            raise fs_error(root_errno, path)  # the operation names the root itself
        name = names[-1]
        if name in (".", "..") or "\0" in name:
            # The session refuses these names; a backend must not create or remove them.
            raise fs_error(errno.EINVAL, path)
        _check_name(name)
        parent = self._lookup("/".join(names[:-1]))
        if not isinstance(parent, Directory):
            raise fs_error(errno.ENOTDIR, path)
        return parent, name

    def _node(self, path: str, fh: Any) -> Inode:
        """The handle's inode when there is one (it outlives unlink), else the path's."""
        if isinstance(fh, FileHandle | DirHandle):
            return fh.inode
        return self._lookup(path)

    def _file(self, path: str, fh: Any, writing: bool = False) -> RegularFile:
        """The regular file for I/O. Writing through a read-only handle is EBADF; reading
        through a write-only one is allowed, because with the writeback cache the kernel
        reads partial pages through whichever handle the writer has."""
        node = self._node(path, fh)
        if not isinstance(node, RegularFile):
            raise fs_error(errno.EISDIR if isinstance(node, Directory) else errno.EINVAL, path)
        if writing and isinstance(fh, FileHandle) and fh.flags & os.O_ACCMODE == os.O_RDONLY:
            raise fs_error(errno.EBADF, path)
        return node

    def _new_ino(self) -> int:
        if self._inode_count >= self.config.max_inodes:
            raise fs_error(errno.ENOSPC)
        ino = self._next_ino
        self._next_ino += 1
        return ino

    def _owner_of_new(self, parent: Directory, ctx: ops.Context) -> tuple[int, int]:
        # BSD group semantics under a setgid directory, as Linux does.
        gid = parent.gid if parent.mode & stat.S_ISGID else ctx.gid
        return ctx.uid, gid

    def _new_mode(self, parent: Directory, ctx: ops.Context, mode: int, gid: int) -> int:
        """The permission bits of a new node: umask applied; a non-directory's setgid bit
        dropped when the creator is not in its group (inode_init_owner does the same)."""
        perms = mode & 0o7777 & ~ctx.umask
        if stat.S_ISDIR(mode):
            if parent.mode & stat.S_ISGID:
                perms |= stat.S_ISGID
        elif perms & stat.S_ISGID and ctx.uid != 0 and ctx.gid != gid:
            perms &= ~stat.S_ISGID
        return stat.S_IFMT(mode) | perms

    def _attach(self, parent: Directory, name: str, node: Inode, now: int) -> None:
        parent.entries[name] = node
        parent.touch_modified(now)
        self._inode_count += 1

    def _maybe_free(self, node: Inode) -> None:
        """Forget an inode with no names and no open handles; its storage returns."""
        if node.nlink > 0 or node.open_count > 0:
            return
        self._inode_count -= 1
        if isinstance(node, RegularFile):
            self._used -= node.content.allocated
            node.content = FileContent()

    def _reserve(self, content: FileContent, offset: int, end: int) -> None:
        """ENOSPC unless storing ``[offset, end)`` fits in the capacity."""
        if end > MAX_FILE_SIZE:
            raise fs_error(errno.EFBIG)
        if self._used + (end - offset) <= self._capacity:
            return  # even a fully new range fits: skip the exact count
        if self._used + content.growth(offset, end) > self._capacity:
            raise fs_error(errno.ENOSPC)

    # -- attributes ----------------------------------------------------------------------

    def vfs_getattr(self, req: ops.GetattrRequest) -> ops.Attr:
        with self._lock:
            return self._node(req.path, req.fh).attr()

    def vfs_setattr(self, req: ops.SetattrRequest) -> ops.Attr:
        with self._lock:
            node = self._node(req.path, req.fh)
            now = time.time_ns()
            if req.uid is not None or req.gid is not None:
                apply_chown(node, req)
            if req.mode is not None:
                apply_chmod(node, req)
            if req.size is not None:
                self._truncate(node, req.size, now)
            if req.atime_ns is not None or req.mtime_ns is not None:
                apply_times(node, req, now)
            if req.kill_suid and not isinstance(node, Directory):
                node.mode = killed_privileges(node.mode)
            node.ctime_ns = now if req.ctime_ns is None else req.ctime_ns
            return node.attr()

    def _truncate(self, node: Inode, size: int, now: int) -> None:
        if not isinstance(node, RegularFile):
            raise fs_error(errno.EISDIR if isinstance(node, Directory) else errno.EINVAL)
        if size < 0:
            raise fs_error(errno.EINVAL)
        if size > MAX_FILE_SIZE:
            raise fs_error(errno.EFBIG)
        content = node.content
        if size != content.size:
            before = content.allocated
            content.truncate(size)
            self._used += content.allocated - before
            node.touch_modified(now)

    def vfs_access(self, req: ops.AccessRequest) -> None:
        with self._lock:
            node = self._lookup(req.path)
            if req.mask != os.F_OK and not may_access(node, req.ctx, req.mask):
                raise fs_error(errno.EACCES, req.path)

    # -- names ---------------------------------------------------------------------------

    def vfs_readlink(self, req: ops.ReadlinkRequest) -> str:
        with self._lock:
            node = self._lookup(req.path)
            if not isinstance(node, Symlink):
                raise fs_error(errno.EINVAL, req.path)
            node.touch_atime(time.time_ns())
            return node.target

    def vfs_symlink(self, req: ops.SymlinkRequest) -> ops.Attr:
        if not req.target:
            raise fs_error(errno.ENOENT, req.path)
        if len(os.fsencode(req.target)) > SYMLINK_MAX:
            raise fs_error(errno.ENAMETOOLONG, req.path)
        with self._lock:
            parent, name = self._parent(req.path, errno.EEXIST)
            if name in parent.entries:
                raise fs_error(errno.EEXIST, req.path)
            uid, gid = self._owner_of_new(parent, req.ctx)
            now = time.time_ns()
            node = Symlink(self._new_ino(), uid, gid, now, req.target)
            self._attach(parent, name, node, now)
            return node.attr()

    def vfs_mknod(self, req: ops.MknodRequest) -> ops.Attr:
        kind = stat.S_IFMT(req.mode) or stat.S_IFREG
        if kind == stat.S_IFDIR:
            raise fs_error(errno.EPERM, req.path)
        if kind != stat.S_IFREG and kind not in _SPECIAL_TYPES:
            raise fs_error(errno.EINVAL, req.path)
        with self._lock:
            parent, name = self._parent(req.path, errno.EEXIST)
            if name in parent.entries:
                raise fs_error(errno.EEXIST, req.path)
            node = self._new_node(parent, req.ctx, kind | (req.mode & 0o7777), req.rdev)
            self._attach(parent, name, node, node.ctime_ns)
            return node.attr()

    def _new_node(self, parent: Directory, ctx: ops.Context, mode: int, rdev: int = 0) -> Inode:
        uid, gid = self._owner_of_new(parent, ctx)
        mode = self._new_mode(parent, ctx, mode, gid)
        now = time.time_ns()
        ino = self._new_ino()
        if stat.S_ISREG(mode):
            return RegularFile(ino, mode, uid, gid, now)
        if stat.S_ISDIR(mode):
            return Directory(ino, mode, uid, gid, now)
        keeps_rdev = stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        return SpecialNode(ino, mode, uid, gid, now, rdev if keeps_rdev else 0)

    def vfs_mkdir(self, req: ops.MkdirRequest) -> ops.Attr:
        with self._lock:
            parent, name = self._parent(req.path, errno.EEXIST)
            if name in parent.entries:
                raise fs_error(errno.EEXIST, req.path)
            node = self._new_node(parent, req.ctx, stat.S_IFDIR | (req.mode & 0o7777))
            self._attach(parent, name, node, node.ctime_ns)
            parent.nlink += 1  # the new directory's ".."
            return node.attr()

    def vfs_unlink(self, req: ops.UnlinkRequest) -> None:
        with self._lock:
            parent, name = self._parent(req.path)
            node = parent.entries.get(name)
            if node is None:
                raise fs_error(errno.ENOENT, req.path)
            if isinstance(node, Directory):
                raise fs_error(errno.EISDIR, req.path)
            if sticky_forbids(parent, node, req.ctx):
                raise fs_error(errno.EPERM, req.path)
            del parent.entries[name]
            now = time.time_ns()
            parent.touch_modified(now)
            node.nlink -= 1
            node.ctime_ns = now
            self._maybe_free(node)

    def vfs_rmdir(self, req: ops.RmdirRequest) -> None:
        with self._lock:
            parent, name = self._parent(req.path)
            node = parent.entries.get(name)
            if node is None:
                raise fs_error(errno.ENOENT, req.path)
            if not isinstance(node, Directory):
                raise fs_error(errno.ENOTDIR, req.path)
            if node.entries:
                raise fs_error(errno.ENOTEMPTY, req.path)
            if sticky_forbids(parent, node, req.ctx):
                raise fs_error(errno.EPERM, req.path)
            del parent.entries[name]
            now = time.time_ns()
            parent.touch_modified(now)
            parent.nlink -= 1
            node.nlink = 0
            node.ctime_ns = now
            self._maybe_free(node)

    def vfs_link(self, req: ops.LinkRequest) -> ops.Attr:
        with self._lock:
            node = self._lookup(req.old)
            if isinstance(node, Directory):
                raise fs_error(errno.EPERM, req.old)
            parent, name = self._parent(req.new, errno.EEXIST)
            if name in parent.entries:
                raise fs_error(errno.EEXIST, req.new)
            now = time.time_ns()
            parent.entries[name] = node
            parent.touch_modified(now)
            node.nlink += 1
            node.ctime_ns = now
            return node.attr()

    def vfs_rename(self, req: ops.RenameRequest) -> None:
        flags = req.flags
        both = ops.RENAME_NOREPLACE | ops.RENAME_EXCHANGE
        if flags & ~both or flags == both:
            raise fs_error(errno.EINVAL, req.old)  # RENAME_WHITEOUT is not supported
        with self._lock:
            old_parent, old_name = self._parent(req.old)
            new_parent, new_name = self._parent(req.new)
            node = old_parent.entries.get(old_name)
            if node is None:
                raise fs_error(errno.ENOENT, req.old)
            target = new_parent.entries.get(new_name)
            if flags & ops.RENAME_NOREPLACE and target is not None:
                raise fs_error(errno.EEXIST, req.new)
            if flags & ops.RENAME_EXCHANGE and target is None:
                raise fs_error(errno.ENOENT, req.new)
            old_path = "/" + "/".join(_components(req.old))
            new_path = "/" + "/".join(_components(req.new))
            if isinstance(node, Directory) and new_path.startswith(old_path + "/"):
                raise fs_error(errno.EINVAL, req.new)  # into its own subtree
            if isinstance(target, Directory) and old_path.startswith(new_path + "/"):
                # The target is an ancestor of the source, so it cannot be empty.
                code = errno.EINVAL if flags & ops.RENAME_EXCHANGE else errno.ENOTEMPTY
                raise fs_error(code, req.new)
            if target is node:
                return  # two names of one inode (or the same name): nothing to do
            if target is not None and not flags & ops.RENAME_EXCHANGE:
                self._check_replace(node, target, req.new)
            if sticky_forbids(old_parent, node, req.ctx) or (
                target is not None and sticky_forbids(new_parent, target, req.ctx)
            ):
                raise fs_error(errno.EPERM, req.old)
            now = time.time_ns()
            if flags & ops.RENAME_EXCHANGE:
                assert target is not None
                old_parent.entries[old_name] = target
                new_parent.entries[new_name] = node
                self._moved(target, new_parent, old_parent, now)
            else:
                del old_parent.entries[old_name]
                new_parent.entries[new_name] = node
                if target is not None:
                    self._unlinked_by_rename(target, new_parent, now)
            self._moved(node, old_parent, new_parent, now)
            old_parent.touch_modified(now)
            new_parent.touch_modified(now)

    @staticmethod
    def _check_replace(node: Inode, target: Inode, path: str) -> None:
        if isinstance(node, Directory):
            if not isinstance(target, Directory):
                raise fs_error(errno.ENOTDIR, path)
            if target.entries:
                raise fs_error(errno.ENOTEMPTY, path)
        elif isinstance(target, Directory):
            raise fs_error(errno.EISDIR, path)

    @staticmethod
    def _moved(node: Inode, source: Directory, destination: Directory, now: int) -> None:
        node.ctime_ns = now
        if isinstance(node, Directory) and source is not destination:
            source.nlink -= 1  # its ".." now counts in the destination
            destination.nlink += 1

    def _unlinked_by_rename(self, target: Inode, parent: Directory, now: int) -> None:
        if isinstance(target, Directory):
            target.nlink = 0
            parent.nlink -= 1
        else:
            target.nlink -= 1
        target.ctime_ns = now
        self._maybe_free(target)

    # -- open files ----------------------------------------------------------------------

    def vfs_open(self, req: ops.OpenRequest) -> FileHandle:
        with self._lock:
            node = self._lookup(req.path)
            return self._open(node, req.flags, req.path)

    def _open(self, node: Inode, flags: int, path: str) -> FileHandle:
        if isinstance(node, Directory):
            if flags & os.O_ACCMODE != os.O_RDONLY:
                raise fs_error(errno.EISDIR, path)
        elif isinstance(node, Symlink):
            raise fs_error(errno.ELOOP, path)
        elif flags & os.O_DIRECTORY:
            raise fs_error(errno.ENOTDIR, path)
        if (
            isinstance(node, RegularFile)
            and flags & os.O_TRUNC
            and flags & os.O_ACCMODE != os.O_RDONLY
        ):
            # POSIX: O_TRUNC on an existing file marks mtime and ctime even if it was empty.
            before = node.content.allocated
            node.content.truncate(0)
            self._used += node.content.allocated - before
            node.touch_modified(time.time_ns())
        node.open_count += 1
        return FileHandle(node, flags)

    def vfs_create(self, req: ops.CreateRequest) -> tuple[FileHandle, ops.Attr]:
        with self._lock:
            parent, name = self._parent(req.path, errno.EISDIR)
            node = parent.entries.get(name)
            if node is not None:
                if req.flags & os.O_EXCL:
                    raise fs_error(errno.EEXIST, req.path)
                if isinstance(node, Directory):
                    raise fs_error(errno.EISDIR, req.path)
                return self._open(node, req.flags, req.path), node.attr()
            mode = stat.S_IFREG | (req.mode & 0o7777)
            node = self._new_node(parent, req.ctx, mode)
            self._attach(parent, name, node, node.ctime_ns)
            handle = self._open(node, req.flags & ~os.O_TRUNC, req.path)
            return handle, node.attr()

    def vfs_read(self, req: ops.ReadRequest) -> bytearray | int:
        if req.offset < 0:
            raise fs_error(errno.EINVAL, req.path)
        with self._lock:
            node = self._file(req.path, req.fh)
            if req.buffers:
                result: bytearray | int = node.content.read_into(req.offset, req.size, req.buffers)
            else:
                result = node.content.read(req.offset, req.size)
            node.touch_atime(time.time_ns())
            return result

    def vfs_write(self, req: ops.WriteRequest) -> int:
        if req.offset < 0:
            raise fs_error(errno.EINVAL, req.path)
        fh = req.fh
        with self._lock:
            node = self._file(req.path, fh, writing=True)
            content = node.content
            length = _total_bytes(req.data)
            if length == 0:
                return 0
            # O_APPEND comes from the request (the kernel sends the writer's file flags), not
            # from the handle: with the writeback cache the kernel writes cached pages back at
            # their own offsets through an O_APPEND handle, and appending those would
            # duplicate data.
            offset = content.size if req.flags & os.O_APPEND else req.offset
            self._reserve(content, offset, offset + length)
            before = content.allocated
            content.write(offset, req.data)
            self._used += content.allocated - before
            node.touch_modified(time.time_ns())
            # A write by anyone but root drops setuid/setgid (file_remove_privs).
            if node.mode & (stat.S_ISUID | stat.S_ISGID) and (
                req.ctx.uid != 0 or req.write_flags & FUSE_WRITE_KILL_SUIDGID
            ):
                node.mode = killed_privileges(node.mode)
            return length

    def vfs_flush(self, req: ops.FlushRequest) -> None:
        # close(2) drops the closing process's POSIX locks on the file, whichever fd took them.
        with self._lock:
            node = self._node(req.path, req.fh)
            if node.posix_locks is not None and node.posix_locks.release_owner(req.lock_owner):
                self._lock_changed.notify_all()

    def vfs_release(self, req: ops.ReleaseRequest) -> None:
        fh = req.fh
        if not isinstance(fh, FileHandle):
            return
        with self._lock:
            if fh.released:
                return
            fh.released = True
            node = fh.inode
            # flock locks belong to the open file description, which ends here; POSIX locks
            # taken through it should be gone already (flush), but not every client flushes.
            released = False
            if node.flock_locks is not None:
                for owner in fh.flock_owners:
                    released |= node.flock_locks.release_owner(owner)
            if node.posix_locks is not None:
                for owner in fh.posix_owners:
                    released |= node.posix_locks.release_owner(owner)
            if released:
                self._lock_changed.notify_all()
            node.open_count -= 1
            self._maybe_free(node)

    def vfs_fsync(self, req: ops.FsyncRequest) -> None:
        return None  # RAM is as durable as this filesystem gets

    def vfs_fallocate(self, req: ops.FallocateRequest) -> None:
        mode = req.mode
        if req.offset < 0 or req.length <= 0:
            raise fs_error(errno.EINVAL, req.path)
        if mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE):
            raise fs_error(errno.EOPNOTSUPP, req.path)
        if mode & FALLOC_FL_PUNCH_HOLE and not mode & FALLOC_FL_KEEP_SIZE:
            raise fs_error(errno.EOPNOTSUPP, req.path)
        end = req.offset + req.length
        with self._lock:
            node = self._file(req.path, req.fh, writing=True)
            content = node.content
            now = time.time_ns()
            before = content.allocated
            if mode & FALLOC_FL_PUNCH_HOLE:
                content.zero(req.offset, req.length)
                self._used += content.allocated - before
                node.touch_modified(now)
                return
            if req.length - content.allocated > self._capacity - self._used:
                raise fs_error(errno.ENOSPC, req.path)  # cannot fit even if all is new
            self._reserve(content, req.offset, end)
            content.allocate(req.offset, req.length)
            self._used += content.allocated - before
            if not mode & FALLOC_FL_KEEP_SIZE and end > content.size:
                content.size = end
                node.touch_modified(now)
            else:
                node.ctime_ns = now

    def vfs_lseek(self, req: ops.LseekRequest) -> int:
        with self._lock:
            node = self._file(req.path, req.fh)
            content = node.content
            if req.offset < 0:
                raise fs_error(errno.ENXIO, req.path)
            if req.whence == os.SEEK_DATA:
                found = content.next_data(req.offset)
            elif req.whence == os.SEEK_HOLE:
                found = content.next_hole(req.offset)
            else:
                raise fs_error(errno.EINVAL, req.path)
            if found is None:
                raise fs_error(errno.ENXIO, req.path)
            return found

    def vfs_copy_file_range(self, req: ops.CopyFileRangeRequest) -> int:
        if req.flags:
            raise fs_error(errno.EINVAL, req.path_in)
        if req.offset_in < 0 or req.offset_out < 0:
            raise fs_error(errno.EINVAL, req.path_in)
        with self._lock:
            source = self._file(req.path_in, req.fh_in)
            sink = self._file(req.path_out, req.fh_out, writing=True)
            if isinstance(req.fh_out, FileHandle) and req.fh_out.flags & os.O_APPEND:
                raise fs_error(errno.EBADF, req.path_out)
            # A short copy is legal; bounding it bounds the time the tree lock is held.
            length = max(0, min(req.length, source.content.size - req.offset_in, MAX_COPY))
            if length == 0:
                return 0
            same = source is sink
            if same and abs(req.offset_in - req.offset_out) < length:
                raise fs_error(errno.EINVAL, req.path_out)  # overlapping ranges of one file
            self._reserve(sink.content, req.offset_out, req.offset_out + length)
            before = sink.content.allocated
            sink.content.copy_from(source.content, req.offset_in, req.offset_out, length)
            self._used += sink.content.allocated - before
            now = time.time_ns()
            sink.touch_modified(now)
            source.touch_atime(now)
            return length

    # -- directories ---------------------------------------------------------------------

    def vfs_opendir(self, req: ops.OpendirRequest) -> DirHandle:
        with self._lock:
            node = self._lookup(req.path)
            if not isinstance(node, Directory):
                raise fs_error(errno.ENOTDIR, req.path)
            node.open_count += 1
            return DirHandle(node)

    def vfs_readdir(self, req: ops.ReaddirRequest) -> list[ops.DirEntry]:
        with self._lock:
            node = self._node(req.path, req.fh)
            if not isinstance(node, Directory):
                raise fs_error(errno.ENOTDIR, req.path)
            node.touch_atime(time.time_ns())
            return [
                ops.DirEntry(name, child.ino, child.mode, child.attr())
                for name, child in node.entries.items()
            ]

    def vfs_releasedir(self, req: ops.ReleasedirRequest) -> None:
        fh = req.fh
        if not isinstance(fh, DirHandle):
            return
        with self._lock:
            if fh.released:
                return
            fh.released = True
            fh.inode.open_count -= 1
            self._maybe_free(fh.inode)

    def vfs_fsyncdir(self, req: ops.FsyncdirRequest) -> None:
        return None

    # -- extended attributes -------------------------------------------------------------

    @staticmethod
    def _check_xattr_name(name: str) -> None:
        if not name or len(os.fsencode(name)) > XATTR_NAME_MAX:
            raise fs_error(errno.ERANGE, name)

    def vfs_setxattr(self, req: ops.SetxattrRequest) -> None:
        self._check_xattr_name(req.name)
        if len(req.value) > XATTR_SIZE_MAX:
            raise fs_error(errno.E2BIG, req.name)
        if req.flags & ~(os.XATTR_CREATE | os.XATTR_REPLACE):
            raise fs_error(errno.EINVAL, req.name)
        with self._lock:
            node = self._lookup(req.path)
            if req.name.startswith("user.") and not isinstance(node, RegularFile | Directory):
                raise fs_error(errno.EPERM, req.path)  # as Linux: user.* only on files and dirs
            present = req.name in node.xattrs
            if present and req.flags & os.XATTR_CREATE:
                raise fs_error(errno.EEXIST, req.name)
            if not present and req.flags & os.XATTR_REPLACE:
                raise fs_error(errno.ENODATA, req.name)
            node.xattrs[req.name] = bytes(req.value)
            node.ctime_ns = time.time_ns()

    def vfs_getxattr(self, req: ops.GetxattrRequest) -> bytes:
        self._check_xattr_name(req.name)
        with self._lock:
            value = self._lookup(req.path).xattrs.get(req.name)
            if value is None:
                raise fs_error(errno.ENODATA, req.name)
            return value

    def vfs_listxattr(self, req: ops.ListxattrRequest) -> list[str]:
        with self._lock:
            return list(self._lookup(req.path).xattrs)

    def vfs_removexattr(self, req: ops.RemovexattrRequest) -> None:
        self._check_xattr_name(req.name)
        with self._lock:
            node = self._lookup(req.path)
            if node.xattrs.pop(req.name, None) is None:
                raise fs_error(errno.ENODATA, req.name)
            node.ctime_ns = time.time_ns()

    # -- locks ---------------------------------------------------------------------------

    @staticmethod
    def _check_lock(lock: ops.Lock) -> None:
        if lock.type not in (fcntl.F_RDLCK, fcntl.F_WRLCK, fcntl.F_UNLCK):
            raise fs_error(errno.EINVAL)
        if lock.start < 0 or lock.end < lock.start:
            raise fs_error(errno.EINVAL)

    def vfs_getlk(self, req: ops.GetlkRequest) -> ops.Lock:
        self._check_lock(req.lock)
        if req.lock.type == fcntl.F_UNLCK:
            raise fs_error(errno.EINVAL, req.path)  # as fcntl(F_GETLK) does
        with self._lock:
            table = self._node(req.path, req.fh).posix_locks
            found = None if table is None else table.conflict(req.owner, req.lock)
            if found is None:
                return req.lock._replace(type=fcntl.F_UNLCK)
            return ops.Lock(found.start, found.end, found.type, found.pid)

    def vfs_setlk(self, req: ops.SetlkRequest) -> None:
        lock = req.lock
        self._check_lock(lock)
        with self._lock:
            node = self._node(req.path, req.fh)
            table = self._lock_table(node, req.flock)
            if lock.type != fcntl.F_UNLCK:
                while (blocker := table.conflict(req.owner, lock)) is not None:
                    if not req.wait:
                        raise fs_error(errno.EAGAIN, req.path)
                    if self._closed:
                        raise fs_error(errno.EINTR, req.path)
                    if not req.flock and self._would_deadlock(req.owner, blocker.owner):
                        raise fs_error(errno.EDEADLK, req.path)
                    self._waits_for[req.owner] = blocker.owner
                    try:
                        # Wakes on every lock change; the timeout notices an INTERRUPT.
                        self._lock_changed.wait(LOCK_WAIT_POLL)  # releases the tree lock
                    finally:
                        self._waits_for.pop(req.owner, None)
                    req.ctx.check_interrupted()
                if isinstance(req.fh, FileHandle):
                    owners = req.fh.flock_owners if req.flock else req.fh.posix_owners
                    owners.add(req.owner)
            table.apply(req.owner, lock)
            # An unlock, a downgrade or a shrunk range may let a waiter in.
            self._lock_changed.notify_all()

    def _would_deadlock(self, owner: int, blocker: int) -> bool:
        """Whether ``blocker`` waits, directly or through others, for ``owner``: the POSIX
        deadlock check of fcntl(F_SETLKW), bounded like Linux's (10 steps)."""
        for _ in range(10):
            if blocker == owner:
                return True
            next_blocker = self._waits_for.get(blocker)
            if next_blocker is None:
                return False
            blocker = next_blocker
        return False

    @staticmethod
    def _lock_table(node: Inode, flock: bool) -> RecordLocks:
        if flock:
            if node.flock_locks is None:
                node.flock_locks = RecordLocks()
            return node.flock_locks
        if node.posix_locks is None:
            node.posix_locks = RecordLocks()
        return node.posix_locks

    # -- filesystem ----------------------------------------------------------------------

    def vfs_statfs(self, req: ops.StatfsRequest) -> ops.StatFs:
        block = 4096
        with self._lock:
            free = max(0, self._capacity - self._used)
            return ops.StatFs(
                bsize=block,
                frsize=block,
                blocks=self._capacity // block,
                bfree=free // block,
                bavail=free // block,
                files=self.config.max_inodes,
                ffree=max(0, self.config.max_inodes - self._inode_count),
                namelen=NAME_MAX,
            )

    def vfs_syncfs(self, req: ops.SyncfsRequest) -> None:
        return None

    def vfs_destroy(self, req: ops.DestroyRequest) -> None:
        # The tree survives an unmount: a remount (or a guest reboot) sees the same files.
        return None
