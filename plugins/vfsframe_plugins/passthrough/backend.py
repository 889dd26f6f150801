"""PassthroughBackend: every hook answered by the host file system below one root.

Paths become (parent directory fd, final name) through the Sandbox; operations on open files
use the handle's descriptor. No lock is held across a system call except the brief table
locks in RecordLocks and InodeNumbers, so blocking calls (SETLKW, fsync, big reads) only
hold their own worker thread, and a SETLKW ends on the caller's INTERRUPT.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import threading
from collections.abc import Sequence
from typing import Any

from vfsframe import ops, procfd
from vfsframe.plugin import Backend

from . import syscalls
from .config import PassthroughConfig
from .credentials import Credentials
from .handles import DirHandle, FileHandle
from .inodes import InodeNumbers
from .locks import RecordLocks
from .resolve import Closing, Sandbox, components
from .xattrs import XattrPolicy

# fuse_write_in.write_flags
FUSE_WRITE_CACHE = 1 << 0  # a page written back from the kernel's cache: at its offset
FUSE_WRITE_KILL_SUIDGID = 1 << 2
# Open flags that reach the host; the rest are the client kernel's business (O_CREAT and
# O_EXCL are CREATE's, O_APPEND is done per write, O_NOCTTY/O_PATH/O_CLOEXEC never apply).
_OPEN_FLAGS = (
    os.O_ACCMODE
    | os.O_TRUNC
    | os.O_SYNC
    | os.O_DSYNC
    | os.O_NOATIME
    | os.O_NONBLOCK
    | os.O_DIRECTORY
    | os.O_LARGEFILE
)
_PROC_FD = "/proc/self/fd/"
_HANDLES = (FileHandle, DirHandle)  # a request's fh that holds a descriptor


def _error(code: int, path: str | bytes = "") -> OSError:
    return OSError(code, os.strerror(code), os.fsdecode(path))


def _killed_privileges(mode: int) -> int:
    """``mode`` without setuid, and without setgid when group-executable (as Linux does)."""
    mode &= ~stat.S_ISUID
    if mode & stat.S_IXGRP:
        mode &= ~stat.S_ISGID
    return mode


def _advance(views: Sequence[memoryview], done: int) -> list[memoryview]:
    """What is left of a scatter list after ``done`` bytes."""
    rest: list[memoryview] = []
    for view in views:
        size = view.nbytes
        if done >= size:
            done -= size
            continue
        rest.append(view.cast("B")[done:] if done else view)
        done = 0
    return rest


class PassthroughBackend(Backend):
    """A host directory, sandboxed below its root (see docs/backends/passthrough.md)."""

    def __init__(self, config: PassthroughConfig) -> None:
        if not os.path.isdir(_PROC_FD):
            raise RuntimeError("the passthrough backend needs /proc mounted")
        self.config = config
        self.sandbox = Sandbox(config.root.resolve(), config.submounts)
        self.inodes = InodeNumbers(self.sandbox.root_dev)
        self.credentials = Credentials(config.preserve_ownership)
        self.xattrs = XattrPolicy(config)
        self.record_locks = RecordLocks()
        self.readonly = config.readonly
        # Capabilities the session negotiates, per share.
        self.posix_locks = config.posix_locks
        self.flock_locks = config.flock
        self._has_fchmodat2 = True
        self._read_fd_lock = threading.Lock()  # only for the rare second descriptor

    def close(self) -> None:
        self.record_locks.close()
        self.sandbox.close()

    # -- helpers ---------------------------------------------------------------------------

    def _writable(self, path: str = "") -> None:
        if self.readonly:
            raise _error(errno.EROFS, path)

    def _lstat(self, path: str) -> os.stat_result:
        names = components(path)
        if not names:
            return os.fstat(self.sandbox.root_fd)
        dirfd = self.sandbox.open_parent(names)
        try:
            st = os.stat(names[-1], dir_fd=dirfd, follow_symlinks=False)
        finally:
            if dirfd != self.sandbox.root_fd:
                os.close(dirfd)
        self.sandbox.check_name_device(dirfd, names[-1], st)
        return st

    def _opath(self, path: str) -> Closing:
        """``with self._opath(path) as fd``: an O_PATH descriptor of the object itself (a
        symlink stays a symlink), closed on exit."""
        return Closing(self.sandbox.open(components(path), os.O_PATH))

    @staticmethod
    def _fd(fh: Any) -> int | None:
        return fh.fd if isinstance(fh, _HANDLES) else None

    # -- attributes ------------------------------------------------------------------------

    def vfs_getattr(self, req: ops.GetattrRequest) -> Any:
        fd = self._fd(req.fh)
        st = os.fstat(fd) if fd is not None else self._lstat(req.path)
        return self.inodes.attr(st)

    def vfs_setattr(self, req: ops.SetattrRequest) -> Any:
        self._writable(req.path)
        fd = self._fd(req.fh)
        names = components(req.path) if fd is None else []
        if fd is None and not names:
            fd = self.sandbox.root_fd
        if fd is not None:
            self._setattr_fd(fd, req)
            return self.inodes.attr(os.fstat(fd))
        with self.sandbox.parent(req.path) as (dirfd, name):
            self._setattr_at(dirfd, name, req)
            return self.inodes.attr(os.stat(name, dir_fd=dirfd, follow_symlinks=False))

    def _setattr_fd(self, fd: int, req: ops.SetattrRequest) -> None:
        if req.uid is not None or req.gid is not None:
            os.fchown(fd, -1 if req.uid is None else req.uid, -1 if req.gid is None else req.gid)
        if req.mode is not None:
            os.fchmod(fd, req.mode & 0o7777)
        if req.size is not None:
            os.ftruncate(fd, req.size)
        if req.atime_ns is not None or req.mtime_ns is not None:
            syscalls.futimens(fd, req.atime_ns, req.mtime_ns)
        if req.kill_suid:
            st = os.fstat(fd)
            if not stat.S_ISDIR(st.st_mode):
                killed = _killed_privileges(st.st_mode)
                if killed != st.st_mode:
                    os.fchmod(fd, killed & 0o7777)

    def _setattr_at(self, dirfd: int, name: bytes, req: ops.SetattrRequest) -> None:
        if req.uid is not None or req.gid is not None:
            uid = -1 if req.uid is None else req.uid
            gid = -1 if req.gid is None else req.gid
            os.chown(name, uid, gid, dir_fd=dirfd, follow_symlinks=False)
        if req.mode is not None:
            self._chmod_at(dirfd, name, req.mode & 0o7777)
        if req.size is not None:
            self._truncate_at(dirfd, name, req.size)
        if req.atime_ns is not None or req.mtime_ns is not None:
            syscalls.utimensat(
                dirfd, name, req.atime_ns, req.mtime_ns, syscalls.AT_SYMLINK_NOFOLLOW
            )
        if req.kill_suid:
            st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            if stat.S_ISREG(st.st_mode):
                killed = _killed_privileges(st.st_mode)
                if killed != st.st_mode:
                    self._chmod_at(dirfd, name, killed & 0o7777)

    def _chmod_at(self, dirfd: int, name: bytes, mode: int) -> None:
        """chmod of a name without following it; a symlink's mode cannot change (EOPNOTSUPP,
        as fchmodat(AT_SYMLINK_NOFOLLOW) says on Linux)."""
        if self._has_fchmodat2:
            try:
                syscalls.fchmodat2(dirfd, name, mode, syscalls.AT_SYMLINK_NOFOLLOW)
                return
            except OSError as exc:
                if exc.errno != errno.ENOSYS:
                    raise
                self._has_fchmodat2 = False
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
        try:
            if stat.S_ISLNK(os.fstat(fd).st_mode):
                raise _error(errno.EOPNOTSUPP, name)
            os.chmod(procfd.fd_path(fd), mode)  # the magic link is this very inode
        finally:
            os.close(fd)

    def _truncate_at(self, dirfd: int, name: bytes, size: int) -> None:
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
        try:
            mode = os.fstat(fd).st_mode
            if stat.S_ISDIR(mode):
                raise _error(errno.EISDIR, name)
            if not stat.S_ISREG(mode):
                raise _error(errno.EINVAL, name)
            os.truncate(procfd.fd_path(fd), size)
        finally:
            os.close(fd)

    def vfs_access(self, req: ops.AccessRequest) -> None:
        st = self._lstat(req.path)
        mask = req.mask & (os.R_OK | os.W_OK | os.X_OK)
        if mask & os.W_OK and self.readonly:
            raise _error(errno.EROFS, req.path)
        if not _may_access(st, req.ctx, mask):
            raise _error(errno.EACCES, req.path)

    # -- names -----------------------------------------------------------------------------

    def vfs_readlink(self, req: ops.ReadlinkRequest) -> str:
        with self.sandbox.parent(req.path, errno.EINVAL) as (dirfd, name):
            return os.fsdecode(os.readlink(name, dir_fd=dirfd))

    def _new_attr(self, dirfd: int, name: bytes) -> Any:
        return self.inodes.attr(os.stat(name, dir_fd=dirfd, follow_symlinks=False))

    def vfs_symlink(self, req: ops.SymlinkRequest) -> Any:
        self._writable(req.path)
        with self.sandbox.parent(req.path, errno.EEXIST) as (dirfd, name):
            with self.credentials.creating(req.ctx):
                os.symlink(os.fsencode(req.target), name, dir_fd=dirfd)
            return self._new_attr(dirfd, name)

    def vfs_mknod(self, req: ops.MknodRequest) -> Any:
        self._writable(req.path)
        kind = stat.S_IFMT(req.mode) or stat.S_IFREG
        if kind == stat.S_IFDIR:
            raise _error(errno.EPERM, req.path)
        if kind in (stat.S_IFCHR, stat.S_IFBLK) and not self.config.allow_devices:
            raise _error(errno.EPERM, req.path)
        mode = kind | self.credentials.mode(req.ctx, req.mode)
        with self.sandbox.parent(req.path, errno.EEXIST) as (dirfd, name):
            with self.credentials.creating(req.ctx):
                os.mknod(name, mode, req.rdev, dir_fd=dirfd)
            return self._new_attr(dirfd, name)

    def vfs_mkdir(self, req: ops.MkdirRequest) -> Any:
        self._writable(req.path)
        with self.sandbox.parent(req.path, errno.EEXIST) as (dirfd, name):
            with self.credentials.creating(req.ctx):
                os.mkdir(name, self.credentials.mode(req.ctx, req.mode), dir_fd=dirfd)
            return self._new_attr(dirfd, name)

    def vfs_unlink(self, req: ops.UnlinkRequest) -> None:
        self._writable(req.path)
        with self.sandbox.parent(req.path) as (dirfd, name):
            os.unlink(name, dir_fd=dirfd)

    def vfs_rmdir(self, req: ops.RmdirRequest) -> None:
        self._writable(req.path)
        with self.sandbox.parent(req.path) as (dirfd, name):
            os.rmdir(name, dir_fd=dirfd)

    def vfs_rename(self, req: ops.RenameRequest) -> None:
        self._writable(req.old)
        with (
            self.sandbox.parent(req.old) as (old_dir, old_name),
            self.sandbox.parent(req.new) as (new_dir, new_name),
        ):
            if req.flags:
                syscalls.renameat2(old_dir, old_name, new_dir, new_name, req.flags)
            else:
                os.rename(old_name, new_name, src_dir_fd=old_dir, dst_dir_fd=new_dir)

    def vfs_link(self, req: ops.LinkRequest) -> Any:
        self._writable(req.new)
        with (
            self.sandbox.parent(req.old) as (old_dir, old_name),
            self.sandbox.parent(req.new, errno.EEXIST) as (new_dir, new_name),
        ):
            os.link(
                old_name, new_name, src_dir_fd=old_dir, dst_dir_fd=new_dir, follow_symlinks=False
            )
            return self._new_attr(new_dir, new_name)

    # -- open files ------------------------------------------------------------------------

    def _host_flags(self, flags: int, path: str) -> int:
        writing = flags & os.O_ACCMODE != os.O_RDONLY or flags & os.O_TRUNC
        if writing and self.readonly:
            raise _error(errno.EROFS, path)
        host = flags & _OPEN_FLAGS
        if flags & os.O_DIRECT:
            if self.config.direct_io == "refuse":
                raise _error(errno.EINVAL, path)
            if self.config.direct_io == "passthrough":
                host |= os.O_DIRECT
        return host | os.O_CLOEXEC

    def _handle(self, fd: int, flags: int, st: os.stat_result) -> FileHandle:
        handle = FileHandle(fd, flags, self.inodes.key(st))
        if self.posix_locks:
            self.record_locks.opened(handle.key)
        return handle

    def vfs_open(self, req: ops.OpenRequest) -> FileHandle:
        flags = self._host_flags(req.flags, req.path)
        # Look before opening: opening a device or a FIFO has effects of its own.
        with self._opath(req.path) as path_fd:
            st = os.fstat(path_fd)
            mode = st.st_mode
            if stat.S_ISLNK(mode):
                raise _error(errno.ELOOP, req.path)
            if stat.S_ISDIR(mode) and flags & os.O_ACCMODE != os.O_RDONLY:
                raise _error(errno.EISDIR, req.path)
            if (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)) and not self.config.allow_devices:
                raise _error(errno.EPERM, req.path)
            if stat.S_ISFIFO(mode):
                flags |= os.O_NONBLOCK  # a worker must not wait for the other end
            # Reopening through the magic link opens exactly the inode just checked.
            fd = os.open(procfd.fd_path(path_fd), flags)
        return self._handle(fd, req.flags, st)

    def vfs_create(self, req: ops.CreateRequest) -> tuple[FileHandle, Any]:
        self._writable(req.path)
        flags = self._host_flags(req.flags, req.path) | os.O_CREAT | os.O_NOFOLLOW
        flags |= req.flags & os.O_EXCL
        mode = self.credentials.mode(req.ctx, req.mode)
        with (
            self.sandbox.parent(req.path, errno.EEXIST) as (dirfd, name),
            self.credentials.creating(req.ctx),
        ):
            # O_NONBLOCK: a FIFO that appeared under the name must not hang the worker.
            fd = os.open(name, flags | os.O_NONBLOCK, mode, dir_fd=dirfd)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise _error(errno.EEXIST, req.path)
            if not flags & os.O_NONBLOCK:
                fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        except BaseException:
            os.close(fd)
            raise
        return self._handle(fd, req.flags, st), self.inodes.attr(st)

    def _read_fd(self, fh: FileHandle) -> int:
        if fh.flags & os.O_ACCMODE != os.O_WRONLY:
            return fh.fd
        if fh.read_fd < 0:
            # The kernel may read through a write-only handle (partial pages of the writeback
            # cache); a second descriptor of the same file serves those reads.
            with self._read_fd_lock:
                if fh.read_fd < 0:
                    fh.read_fd = os.open(procfd.fd_path(fh.fd), os.O_RDONLY | os.O_CLOEXEC)
        return fh.read_fd

    def vfs_read(self, req: ops.ReadRequest) -> bytes | int:
        fd = self._read_fd(req.fh)
        if not req.buffers:
            return os.pread(fd, req.size, req.offset)
        done = os.preadv(fd, req.buffers, req.offset)
        if 0 < done < req.size:  # short of EOF only when interrupted: go on
            rest = _advance(req.buffers, done)
            while rest:
                count = os.preadv(fd, rest, req.offset + done)
                if count == 0:
                    break
                done += count
                rest = _advance(rest, count)
        return done

    def vfs_write(self, req: ops.WriteRequest) -> int:
        self._writable(req.path)
        fh: FileHandle = req.fh
        # An O_APPEND write lands at the host's end of file, where other writers (host
        # processes, other guests) put theirs; pages written back from the kernel's cache
        # (FUSE_WRITE_CACHE) belong at their offset.
        append = req.flags & os.O_APPEND and not req.write_flags & FUSE_WRITE_CACHE
        rwf = os.RWF_APPEND if append else 0
        if req.write_flags & FUSE_WRITE_KILL_SUIDGID:
            self._kill_suid(fh.fd)
        done = os.pwritev(fh.fd, req.data, req.offset, rwf)
        if done < req.size:
            rest = _advance(req.data, done)
            while rest:
                count = os.pwritev(fh.fd, rest, req.offset + done, rwf)
                if count == 0:
                    break
                done += count
                rest = _advance(rest, count)
        return done

    def _kill_suid(self, fd: int) -> None:
        mode = os.fstat(fd).st_mode
        killed = _killed_privileges(mode)
        if killed != mode:
            os.fchmod(fd, killed & 0o7777)

    def vfs_flush(self, req: ops.FlushRequest) -> None:
        fh: FileHandle = req.fh
        if self.posix_locks and req.lock_owner:
            self.record_locks.release_owner(fh.key, req.lock_owner)
        # Close a duplicate: file systems that report write-back errors at close (NFS) report
        # them to the guest's close(2).
        os.close(os.dup(fh.fd))

    def vfs_release(self, req: ops.ReleaseRequest) -> None:
        fh: FileHandle = req.fh
        if self.posix_locks:
            self.record_locks.closed(fh.key)
        fh.close()

    def vfs_fsync(self, req: ops.FsyncRequest) -> None:
        fd = req.fh.fd
        if req.datasync:
            os.fdatasync(fd)
        else:
            os.fsync(fd)

    # -- directories -----------------------------------------------------------------------

    def vfs_opendir(self, req: ops.OpendirRequest) -> DirHandle:
        return DirHandle(self.sandbox.open(components(req.path), os.O_RDONLY | os.O_DIRECTORY))

    def vfs_readdir(self, req: ops.ReaddirRequest) -> list[ops.DirEntry]:
        fd = self._fd(req.fh)
        if fd is not None:
            return self._entries(fd)
        fd = self.sandbox.open(components(req.path), os.O_RDONLY | os.O_DIRECTORY)
        try:
            return self._entries(fd)
        finally:
            os.close(fd)

    def _entries(self, fd: int) -> list[ops.DirEntry]:
        entries = []
        root_dev, submounts = self.sandbox.root_dev, self.sandbox.submounts
        for name in os.listdir(fd):  # dups fd and rewinds it: the handle's offset is kept
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # gone since the listing
            if not submounts and st.st_dev != root_dev:
                continue  # a mount point the share does not serve
            attr = self.inodes.attr(st)
            entries.append(ops.DirEntry(name, attr.st_ino, st.st_mode, attr))
        return entries

    def vfs_releasedir(self, req: ops.ReleasedirRequest) -> None:
        if isinstance(req.fh, DirHandle):
            os.close(req.fh.fd)

    def vfs_fsyncdir(self, req: ops.FsyncdirRequest) -> None:
        fd = self._fd(req.fh)
        if fd is None:
            fd = self.sandbox.root_fd
        if req.datasync:
            os.fdatasync(fd)
        else:
            os.fsync(fd)

    # -- file system -----------------------------------------------------------------------

    def vfs_statfs(self, req: ops.StatfsRequest) -> ops.StatFs:
        names = components(req.path or "/")
        if names:
            with self._opath(req.path) as fd:
                st = os.fstatvfs(fd)
        else:
            st = os.fstatvfs(self.sandbox.root_fd)
        return ops.StatFs(
            st.f_bsize, st.f_frsize, st.f_blocks, st.f_bfree, st.f_bavail,
            st.f_files, st.f_ffree, st.f_namemax,
        )  # fmt: skip

    def vfs_syncfs(self, req: ops.SyncfsRequest) -> None:
        syscalls.syncfs(self.sandbox.root_fd)

    def vfs_destroy(self, req: ops.DestroyRequest) -> None:
        return None

    # -- extended attributes ---------------------------------------------------------------

    def vfs_getxattr(self, req: ops.GetxattrRequest) -> bytes:
        self.xattrs.check_read(req.name)
        with self._opath(req.path) as fd:
            return os.getxattr(procfd.fd_path(fd), req.name)

    def vfs_listxattr(self, req: ops.ListxattrRequest) -> list[str]:
        with self._opath(req.path) as fd:
            names = os.listxattr(procfd.fd_path(fd))
        return self.xattrs.visible(names)

    def vfs_setxattr(self, req: ops.SetxattrRequest) -> None:
        self._writable(req.path)
        self.xattrs.check_write(req.name)
        with self._opath(req.path) as fd:
            os.setxattr(procfd.fd_path(fd), req.name, req.value, req.flags)

    def vfs_removexattr(self, req: ops.RemovexattrRequest) -> None:
        self._writable(req.path)
        self.xattrs.check_write(req.name)
        with self._opath(req.path) as fd:
            os.removexattr(procfd.fd_path(fd), req.name)

    # -- locks -----------------------------------------------------------------------------

    def vfs_getlk(self, req: ops.GetlkRequest) -> ops.Lock:
        if not self.posix_locks:
            raise _error(errno.ENOSYS, req.path)
        fh: FileHandle = req.fh
        return self.record_locks.getlk(fh.key, req.owner, fh.fd, req.lock)

    def vfs_setlk(self, req: ops.SetlkRequest) -> None:
        fh: FileHandle = req.fh
        if req.flock:
            if not self.flock_locks:
                raise _error(errno.ENOSYS, req.path)
            self._flock(fh.fd, req.lock.type, req.wait, req.ctx)
            return
        if not self.posix_locks:
            raise _error(errno.ENOSYS, req.path)
        self.record_locks.setlk(fh.key, req.owner, fh.fd, req.lock, req.wait, req.ctx)

    def _flock(self, fd: int, lock_type: int, wait: bool, ctx: ops.Context) -> None:
        operation = {fcntl.F_RDLCK: fcntl.LOCK_SH, fcntl.F_WRLCK: fcntl.LOCK_EX}.get(
            lock_type, fcntl.LOCK_UN
        )
        if operation == fcntl.LOCK_UN:
            fcntl.flock(fd, operation)
            return
        # Never a blocking flock: the wait must end on INTERRUPT (see locks.py).
        self.record_locks.attempt(lambda: fcntl.flock(fd, operation | fcntl.LOCK_NB), wait, ctx)

    # -- data management -------------------------------------------------------------------

    def vfs_fallocate(self, req: ops.FallocateRequest) -> None:
        self._writable(req.path)
        syscalls.fallocate(req.fh.fd, req.mode, req.offset, req.length)

    def vfs_lseek(self, req: ops.LseekRequest) -> int:
        return os.lseek(req.fh.fd, req.offset, req.whence)

    def vfs_copy_file_range(self, req: ops.CopyFileRangeRequest) -> int:
        self._writable(req.path_out)
        return os.copy_file_range(
            req.fh_in.fd, req.fh_out.fd, req.length, req.offset_in, req.offset_out
        )


def _may_access(st: os.stat_result, ctx: ops.Context, mask: int) -> bool:
    """access(2) by mode bits for the caller's uid and primary gid (the kernel checks the
    supplementary groups itself under default_permissions, which the mounts use)."""
    if not mask:
        return True
    if ctx.uid == 0:
        # root may read and write anything; execute needs some x bit (or a directory).
        return not mask & os.X_OK or stat.S_ISDIR(st.st_mode) or bool(st.st_mode & 0o111)
    if ctx.uid == st.st_uid:
        granted = (st.st_mode >> 6) & 7
    elif ctx.gid == st.st_gid:
        granted = (st.st_mode >> 3) & 7
    else:
        granted = st.st_mode & 7
    return mask & granted == mask
