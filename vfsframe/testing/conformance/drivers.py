"""One small file API over two layers, so every check is written once.

- ``ChainDriver`` calls the share's hook chain directly with ``vfsframe.ops`` requests, as the
  session would: fast, no kernel, tracebacks point into the backend.
- ``MountDriver`` makes ordinary system calls on a mounted share (either transport): the
  kernel's VFS, the FUSE protocol and the session all take part.

Paths given to a driver are relative to the share's root ("a/b"). Errors are ``OSError``.
"""

from __future__ import annotations

import ctypes
import os
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from vfsframe import ops
from vfsframe.chain import ShareChain

RENAME_NOREPLACE = ops.RENAME_NOREPLACE
RENAME_EXCHANGE = ops.RENAME_EXCHANGE


class StatLike(Protocol):
    st_ino: int
    st_mode: int
    st_nlink: int
    st_size: int
    st_uid: int
    st_gid: int
    st_atime_ns: int
    st_mtime_ns: int


@dataclass(frozen=True)
class FsStats:
    block_size: int
    blocks: int
    blocks_free: int
    blocks_available: int
    files: int
    files_free: int
    name_max: int


class Driver(Protocol):
    """What a check may do to a share."""

    layer: str

    def lstat(self, path: str) -> StatLike: ...
    def listdir(self, path: str) -> list[str]: ...
    def entries(self, path: str) -> list[tuple[str, int, int]]:
        """(name, inode number, S_IFMT bits) of each name in a directory listing."""
        ...

    def open(self, path: str, flags: int, mode: int = 0o644) -> Any: ...
    def pread(self, handle: Any, size: int, offset: int) -> bytes: ...
    def pwrite(self, handle: Any, data: bytes, offset: int) -> int: ...
    def fstat(self, handle: Any) -> StatLike: ...
    def close(self, handle: Any) -> None: ...
    def mkdir(self, path: str, mode: int = 0o755) -> None: ...
    def rmdir(self, path: str) -> None: ...
    def unlink(self, path: str) -> None: ...
    def rename(self, old: str, new: str, flags: int = 0) -> None: ...
    def link(self, old: str, new: str) -> None: ...
    def symlink(self, target: str, path: str) -> None: ...
    def readlink(self, path: str) -> str: ...
    def chmod(self, path: str, mode: int) -> None: ...
    def utime(self, path: str, atime_ns: int, mtime_ns: int) -> None: ...
    def truncate(self, path: str, size: int) -> None: ...
    def statfs(self, path: str) -> FsStats: ...
    def setxattr(self, path: str, name: str, value: bytes, flags: int = 0) -> None: ...
    def getxattr(self, path: str, name: str) -> bytes: ...
    def listxattr(self, path: str) -> list[str]: ...
    def removexattr(self, path: str, name: str) -> None: ...


def read_file(fs: Driver, path: str, chunk: int = 1 << 20) -> bytes:
    handle = fs.open(path, os.O_RDONLY)
    try:
        parts, offset = [], 0
        while data := fs.pread(handle, chunk, offset):
            parts.append(data)
            offset += len(data)
        return b"".join(parts)
    finally:
        fs.close(handle)


def write_file(fs: Driver, path: str, data: bytes, chunk: int = 1 << 20) -> None:
    handle = fs.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for offset in range(0, len(data), chunk):
            assert fs.pwrite(handle, data[offset : offset + chunk], offset) == len(
                data[offset : offset + chunk]
            )
    finally:
        fs.close(handle)


# --- the mounted share ---------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_AT_FDCWD = -100


class MountDriver:
    """System calls on a mounted share."""

    def __init__(self, root: Path, layer: str) -> None:
        self.root = root
        self.layer = layer

    def _p(self, path: str) -> str:
        return os.path.join(self.root, path)

    def lstat(self, path: str) -> StatLike:
        return os.lstat(self._p(path))

    def listdir(self, path: str) -> list[str]:
        return os.listdir(self._p(path))

    def entries(self, path: str) -> list[tuple[str, int, int]]:
        with os.scandir(self._p(path)) as listing:
            return [(e.name, e.inode(), _scandir_type(e)) for e in listing]

    def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        return os.open(self._p(path), flags, mode)

    def pread(self, handle: int, size: int, offset: int) -> bytes:
        return os.pread(handle, size, offset)

    def pwrite(self, handle: int, data: bytes, offset: int) -> int:
        return os.pwrite(handle, data, offset)  # Linux: O_APPEND descriptors append anyway

    def fstat(self, handle: int) -> StatLike:
        return os.fstat(handle)

    def close(self, handle: int) -> None:
        os.close(handle)

    def mkdir(self, path: str, mode: int = 0o755) -> None:
        os.mkdir(self._p(path), mode)

    def rmdir(self, path: str) -> None:
        os.rmdir(self._p(path))

    def unlink(self, path: str) -> None:
        os.unlink(self._p(path))

    def rename(self, old: str, new: str, flags: int = 0) -> None:
        if not flags:
            os.rename(self._p(old), self._p(new))
            return
        args = (_AT_FDCWD, os.fsencode(self._p(old)), _AT_FDCWD, os.fsencode(self._p(new)))
        if _libc.renameat2(*args, flags) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), old)

    def link(self, old: str, new: str) -> None:
        os.link(self._p(old), self._p(new))

    def symlink(self, target: str, path: str) -> None:
        os.symlink(target, self._p(path))

    def readlink(self, path: str) -> str:
        return os.readlink(self._p(path))

    def chmod(self, path: str, mode: int) -> None:
        os.chmod(self._p(path), mode)

    def utime(self, path: str, atime_ns: int, mtime_ns: int) -> None:
        os.utime(self._p(path), ns=(atime_ns, mtime_ns), follow_symlinks=False)

    def truncate(self, path: str, size: int) -> None:
        os.truncate(self._p(path), size)

    def statfs(self, path: str) -> FsStats:
        st = os.statvfs(self._p(path))
        return FsStats(
            st.f_bsize, st.f_blocks, st.f_bfree, st.f_bavail, st.f_files, st.f_ffree, st.f_namemax
        )

    def setxattr(self, path: str, name: str, value: bytes, flags: int = 0) -> None:
        os.setxattr(self._p(path), name, value, flags, follow_symlinks=False)

    def getxattr(self, path: str, name: str) -> bytes:
        return os.getxattr(self._p(path), name, follow_symlinks=False)

    def listxattr(self, path: str) -> list[str]:
        return os.listxattr(self._p(path), follow_symlinks=False)

    def removexattr(self, path: str, name: str) -> None:
        os.removexattr(self._p(path), name, follow_symlinks=False)


def _scandir_type(entry: os.DirEntry[str]) -> int:
    if entry.is_symlink():
        return stat.S_IFLNK
    if entry.is_dir(follow_symlinks=False):
        return stat.S_IFDIR
    if entry.is_file(follow_symlinks=False):
        return stat.S_IFREG
    return stat.S_IFMT(entry.stat(follow_symlinks=False).st_mode)


# --- the hook chain, in process -----------------------------------------------------------


@dataclass
class ChainHandle:
    """An open file as the session keeps it: the backend's handle and the name it has now."""

    path: str
    fh: Any
    flags: int
    lock: threading.Lock = field(default_factory=threading.Lock)


class ChainDriver:
    """Requests straight into a share's hook chain, with the bookkeeping the session does
    (names of open files follow renames; an unlinked open file is addressed as "")."""

    layer = "inprocess"

    def __init__(self, chain: ShareChain, ctx: ops.Context | None = None) -> None:
        self.chain = chain
        self.ctx = ctx or ops.Context(uid=os.getuid(), gid=os.getgid(), pid=os.getpid())
        self._open: list[ChainHandle] = []
        self._open_lock = threading.Lock()

    def _p(self, path: str) -> str:
        """The share path of ``path``, after looking up every directory above it as the
        kernel does before it sends a request (ENOENT / ENOTDIR come from there)."""
        parts = [part for part in path.split("/") if part]
        for depth in range(len(parts)):
            st = self.chain.getattr(ops.GetattrRequest(self.ctx, "/" + "/".join(parts[:depth])))
            if not stat.S_ISDIR(st.st_mode):
                raise NotADirectoryError(20, "Not a directory", path)
        return "/" + "/".join(parts)

    def lstat(self, path: str) -> StatLike:
        return self.chain.getattr(ops.GetattrRequest(self.ctx, self._p(path)))

    def listdir(self, path: str) -> list[str]:
        return [name for name, _ino, _type in self.entries(path)]

    def entries(self, path: str) -> list[tuple[str, int, int]]:
        p = self._p(path)
        if not stat.S_ISDIR(self.lstat(path).st_mode):  # the kernel checks before OPENDIR
            raise NotADirectoryError(20, "Not a directory", path)
        fh = self.chain.opendir(ops.OpendirRequest(self.ctx, p))
        try:
            listing = self.chain.readdir(ops.ReaddirRequest(self.ctx, p, fh))
            return [(e.name, e.ino, stat.S_IFMT(e.mode)) for e in listing]
        finally:
            self.chain.releasedir(ops.ReleasedirRequest(self.ctx, p, fh))

    def open(self, path: str, flags: int, mode: int = 0o644) -> ChainHandle:
        p = self._p(path)
        if flags & os.O_CREAT:
            # The kernel looks the name up first and sends CREATE only for a new name.
            exists = True
            try:
                self.lstat(path)
            except FileNotFoundError:
                exists = False
            if exists and flags & os.O_EXCL:
                raise FileExistsError(17, "File exists", path)
            if not exists:
                req = ops.CreateRequest(self.ctx, p, flags, stat.S_IFREG | mode)
                fh, _attr = self.chain.create(req)
                return self._track(ChainHandle(p, fh, flags))
        fh = self.chain.open(ops.OpenRequest(self.ctx, p, flags & ~(os.O_CREAT | os.O_EXCL)))
        return self._track(ChainHandle(p, fh, flags))

    def _track(self, handle: ChainHandle) -> ChainHandle:
        with self._open_lock:
            self._open.append(handle)
        return handle

    def pread(self, handle: ChainHandle, size: int, offset: int) -> bytes:
        buffer = bytearray(size)
        req = ops.ReadRequest(self.ctx, handle.path, handle.fh, offset, size, [memoryview(buffer)])
        result = self.chain.read(req)
        if isinstance(result, int):
            return bytes(buffer[:result])
        return bytes(result)

    def pwrite(self, handle: ChainHandle, data: bytes, offset: int) -> int:
        flags = handle.flags & os.O_APPEND
        req = ops.WriteRequest(
            self.ctx, handle.path, handle.fh, offset, [memoryview(data)], len(data), flags
        )
        return self.chain.write(req)

    def fstat(self, handle: ChainHandle) -> StatLike:
        return self.chain.getattr(ops.GetattrRequest(self.ctx, handle.path, handle.fh))

    def close(self, handle: ChainHandle) -> None:
        with self._open_lock:
            self._open.remove(handle)
        try:
            self.chain.flush(ops.FlushRequest(self.ctx, handle.path, handle.fh, id(handle)))
        except OSError as exc:
            if exc.errno != 38:  # ENOSYS: the kernel stops sending FLUSH, nothing to do
                raise
        self.chain.release(ops.ReleaseRequest(self.ctx, handle.path, handle.fh, handle.flags))

    def mkdir(self, path: str, mode: int = 0o755) -> None:
        self.chain.mkdir(ops.MkdirRequest(self.ctx, self._p(path), mode))

    def rmdir(self, path: str) -> None:
        self.chain.rmdir(ops.RmdirRequest(self.ctx, self._p(path)))

    def unlink(self, path: str) -> None:
        p = self._p(path)
        ino = self.lstat(path).st_ino
        self.chain.unlink(ops.UnlinkRequest(self.ctx, p))
        try:
            ino_left = self.lstat(path).st_ino  # another link may not share the name
        except FileNotFoundError:
            ino_left = None
        with self._open_lock:
            for handle in self._open:
                if handle.path == p and ino_left != ino:
                    handle.path = ""

    def rename(self, old: str, new: str, flags: int = 0) -> None:
        po, pn = self._p(old), self._p(new)
        self.chain.rename(ops.RenameRequest(self.ctx, po, pn, flags))
        with self._open_lock:
            for handle in self._open:
                if flags & RENAME_EXCHANGE and _under(handle.path, pn):
                    handle.path = po + handle.path[len(pn) :]
                elif _under(handle.path, po):
                    handle.path = pn + handle.path[len(po) :]
                elif _under(handle.path, pn):
                    handle.path = ""  # replaced by the rename

    def link(self, old: str, new: str) -> None:
        self.chain.link(ops.LinkRequest(self.ctx, self._p(old), self._p(new)))

    def symlink(self, target: str, path: str) -> None:
        self.chain.symlink(ops.SymlinkRequest(self.ctx, self._p(path), target))

    def readlink(self, path: str) -> str:
        return self.chain.readlink(ops.ReadlinkRequest(self.ctx, self._p(path)))

    def _setattr(self, path: str, **fields: Any) -> None:
        self.chain.setattr(ops.SetattrRequest(self.ctx, self._p(path), **fields))

    def chmod(self, path: str, mode: int) -> None:
        self._setattr(path, mode=mode)

    def utime(self, path: str, atime_ns: int, mtime_ns: int) -> None:
        self._setattr(path, atime_ns=atime_ns, mtime_ns=mtime_ns)

    def truncate(self, path: str, size: int) -> None:
        self._setattr(path, size=size)

    def statfs(self, path: str) -> FsStats:
        st = self.chain.statfs(ops.StatfsRequest(self.ctx, self._p(path)))
        return FsStats(st.bsize, st.blocks, st.bfree, st.bavail, st.files, st.ffree, st.namelen)

    def setxattr(self, path: str, name: str, value: bytes, flags: int = 0) -> None:
        self.chain.setxattr(ops.SetxattrRequest(self.ctx, self._p(path), name, value, flags))

    def getxattr(self, path: str, name: str) -> bytes:
        return bytes(self.chain.getxattr(ops.GetxattrRequest(self.ctx, self._p(path), name)))

    def listxattr(self, path: str) -> list[str]:
        return list(self.chain.listxattr(ops.ListxattrRequest(self.ctx, self._p(path))))

    def removexattr(self, path: str, name: str) -> None:
        self.chain.removexattr(ops.RemovexattrRequest(self.ctx, self._p(path), name))


def _under(path: str, prefix: str) -> bool:
    return bool(path) and (path == prefix or path.startswith(prefix.rstrip("/") + "/"))
