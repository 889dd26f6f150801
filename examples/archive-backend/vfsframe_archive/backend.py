"""The `archive` backend: answers from the index built at start; refuses every change."""

from __future__ import annotations

import errno
import logging
import os
import stat
import tarfile
import threading
import zipfile
from typing import Any

from vfsframe import ops
from vfsframe.plugin import Backend

from .config import ArchiveConfig
from .tar_index import index_tar
from .tree import ArchiveTree, Node
from .zip_index import index_zip

log = logging.getLogger(__name__)

_MAGIC = {
    b"\x1f\x8b": "tar",  # gzip
    b"BZh": "tar",
    b"\xfd7zXZ\x00": "tar",  # xz
    b"PK\x03\x04": "zip",
    b"PK\x05\x06": "zip",  # an empty zip
}
_COMPRESSED = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND | os.O_CREAT


class ArchiveError(OSError):
    """The archive cannot be served: not an archive, damaged or truncated."""


def _erofs(self: ArchiveBackend, req: Any) -> None:
    raise OSError(errno.EROFS, "the archive is read-only", getattr(req, "path", ""))


class ArchiveBackend(Backend):
    def __init__(self, config: ArchiveConfig) -> None:
        self.path = str(config.path)
        self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        self._zip: zipfile.ZipFile | None = None
        try:
            st = os.fstat(self._fd)
            self.tree = ArchiveTree(config.dir_mode, st.st_mtime_ns)
            self._index(config.format)
            self.tree.finish()
        except BaseException:
            self.close()
            raise
        self._total_size = sum(n.size for n in self._files())
        self._open_lock = threading.Lock()

    def _index(self, wanted: str) -> None:
        head = os.pread(self._fd, 8, 0)
        detected = next((kind for magic, kind in _MAGIC.items() if head.startswith(magic)), "tar")
        kind = detected if wanted == "auto" else wanted
        try:
            if kind == "zip":
                self._zip = zipfile.ZipFile(self.path)
                index_zip(self._zip, self._fd, self.tree, log)
            else:
                compressed = head.startswith(_COMPRESSED)
                index_tar(self.path, self._fd, self.tree, compressed)
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, ValueError) as exc:
            raise ArchiveError(
                errno.EINVAL, f"{self.path} is not a readable {kind} archive: {exc}"
            ) from None
        except (OSError, RuntimeError) as exc:  # zlib/lzma errors of a damaged stream
            raise ArchiveError(errno.EIO, f"{self.path}: damaged {kind} archive: {exc}") from None

    def _files(self) -> list[Node]:
        seen: dict[int, Node] = {}
        stack = [self.tree.root]
        while stack:
            node = stack.pop()
            seen[node.ino] = node
            stack.extend(node.children.values())
        return [n for n in seen.values() if stat.S_ISREG(n.mode)]

    def _node(self, path: str) -> Node:
        node = self.tree.lookup(path)
        if node is None:
            raise OSError(errno.ENOENT, "no such member", path)
        return node

    # --- reading ------------------------------------------------------------------------

    def vfs_getattr(self, req: ops.GetattrRequest) -> ops.Attr:
        return self._node(req.path).attr()

    def vfs_readlink(self, req: ops.ReadlinkRequest) -> str:
        node = self._node(req.path)
        if not stat.S_ISLNK(node.mode):
            raise OSError(errno.EINVAL, "not a symbolic link", req.path)
        return node.target

    def vfs_opendir(self, req: ops.OpendirRequest) -> Node:
        node = self._node(req.path)
        if not stat.S_ISDIR(node.mode):
            raise OSError(errno.ENOTDIR, "not a directory", req.path)
        return node

    def vfs_readdir(self, req: ops.ReaddirRequest) -> list[ops.DirEntry]:
        node = req.fh if isinstance(req.fh, Node) else self._node(req.path)
        return [
            ops.DirEntry(name, child.ino, child.mode, child.attr())
            for name, child in node.children.items()
        ]

    def vfs_releasedir(self, req: ops.ReleasedirRequest) -> None:
        return None

    def vfs_open(self, req: ops.OpenRequest) -> Any:
        if req.flags & _WRITE_FLAGS:
            raise OSError(errno.EROFS, "the archive is read-only", req.path)
        node = self._node(req.path)
        if stat.S_ISDIR(node.mode):
            raise OSError(errno.EISDIR, "is a directory", req.path)
        if node.open_data is None:
            raise OSError(errno.ENXIO, "a device or FIFO in an archive has no data", req.path)
        return node.open_data()

    def vfs_read(self, req: ops.ReadRequest) -> bytes | int:
        return req.fh.read(req.offset, req.size, req.buffers)

    def vfs_release(self, req: ops.ReleaseRequest) -> None:
        req.fh.close()

    def vfs_flush(self, req: ops.FlushRequest) -> None:
        return None

    def vfs_statfs(self, req: ops.StatfsRequest) -> ops.StatFs:
        blocks = (self._total_size + 4095) // 4096
        return ops.StatFs(4096, 4096, blocks, 0, 0, self.tree.nodes, 0, 255)

    def vfs_access(self, req: ops.AccessRequest) -> None:
        self._node(req.path)
        if req.mask & os.W_OK:
            raise OSError(errno.EROFS, "the archive is read-only", req.path)

    def vfs_listxattr(self, req: ops.ListxattrRequest) -> list[str]:
        self._node(req.path)
        return []

    def vfs_getxattr(self, req: ops.GetxattrRequest) -> bytes:
        self._node(req.path)
        raise OSError(errno.ENODATA, "no such attribute", req.path)

    # --- every change is refused --------------------------------------------------------

    vfs_setattr = vfs_mknod = vfs_mkdir = vfs_unlink = vfs_rmdir = vfs_rename = _erofs
    vfs_link = vfs_symlink = vfs_create = vfs_write = vfs_setxattr = _erofs
    vfs_removexattr = vfs_fallocate = vfs_copy_file_range = _erofs

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
