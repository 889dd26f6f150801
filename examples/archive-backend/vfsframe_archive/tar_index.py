"""Indexing a tar archive (plain, gz, bz2 or xz) into an ArchiveTree."""

from __future__ import annotations

import logging
import os
import stat
import tarfile
from typing import Any, BinaryIO

from .readers import SliceReader, StreamReader
from .tree import ArchiveTree, member_parts

log = logging.getLogger(__name__)

_TYPES = {
    tarfile.DIRTYPE: stat.S_IFDIR,
    tarfile.SYMTYPE: stat.S_IFLNK,
    tarfile.CHRTYPE: stat.S_IFCHR,
    tarfile.BLKTYPE: stat.S_IFBLK,
    tarfile.FIFOTYPE: stat.S_IFIFO,
}


class _MemberStream:
    """A member's decompressed bytes from a TarFile of its own, closed together."""

    def __init__(self, path: str, member: tarfile.TarInfo) -> None:
        self._tar = tarfile.open(path, "r:*")  # noqa: SIM115 (closed by close())
        stream = self._tar.extractfile(member)
        assert stream is not None
        self._stream: BinaryIO = stream

    def seek(self, offset: int) -> int:
        return self._stream.seek(offset)

    def read(self, size: int) -> bytes:
        return self._stream.read(size)

    def close(self) -> None:
        self._stream.close()
        self._tar.close()


def index_tar(path: str, fd: int, tree: ArchiveTree, compressed: bool) -> None:
    """Add every member of the tar at ``path`` (open as ``fd``) to ``tree``. Plain members of
    an uncompressed tar are read in place; the others through a stream of their own."""
    archive_size = os.fstat(fd).st_size
    with tarfile.open(path, "r:*") as tar:
        for member in tar:
            try:
                parts = member_parts(member.name)
            except ValueError as exc:
                log.warning("%s: skipped: %s", path, exc)
                continue
            if member.islnk():
                _add_hard_link(tree, path, "/".join(parts), member.linkname)
                continue
            node = tree.new_node(
                _TYPES.get(member.type, stat.S_IFREG) | stat.S_IMODE(member.mode),
                mtime_ns=round(member.mtime * 1_000_000_000),
                uid=member.uid,
                gid=member.gid,
            )
            if member.issym():
                node.target = member.linkname
                node.size = len(os.fsencode(member.linkname))
            elif member.ischr() or member.isblk():
                node.rdev = os.makedev(member.devmajor, member.devminor)
            elif member.isreg():
                node.size = member.size
                node.open_data = _data_opener(path, fd, member, compressed, archive_size)
            tree.add("/".join(parts), node)


def _data_opener(
    path: str, fd: int, member: tarfile.TarInfo, compressed: bool, archive_size: int
) -> Any:
    if not compressed and not member.issparse():
        if member.offset_data + member.size > archive_size:
            raise tarfile.ReadError(f"member {member.name!r} is cut short (truncated archive)")
        shared = SliceReader(fd, member.offset_data, member.size)
        return lambda: shared
    return lambda: StreamReader(lambda: _MemberStream(path, member), member.size)  # type: ignore[arg-type,return-value]


def _add_hard_link(tree: ArchiveTree, path: str, name: str, target_name: str) -> None:
    try:
        target = tree.lookup("/".join(member_parts(target_name)))
    except ValueError:
        target = None
    if target is None or not stat.S_ISREG(target.mode):
        log.warning(
            "%s: hard link %r to %r: no such file before it; skipped", path, name, target_name
        )
        return
    target.nlink += 1
    tree.add(name, target)
