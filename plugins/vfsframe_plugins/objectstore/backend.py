"""ObjectStoreBackend: a directory tree over an ObjectStore (see docs/backends/objectstore.md).

Paths map to keys: ``/a/b`` is the object ``a/b``; a directory ``/a`` is the prefix ``a/``
and, when created here, the empty marker object ``a/``. Every answer comes from the store
(no cache beyond the kernel's timeouts), except files open in this server, whose state
(size, attributes, unsaved data) is the open inode's until it is uploaded.

Locks: ``_lock`` guards the in-process tables and is never held across a store call; each
open inode's lock is held while its staging file changes or is uploaded, and may be taken
before ``_lock``, never after it.

An open inode is in ``_open`` exactly while its open count is above zero: an open finds it and
counts itself under ``_lock`` in one step, so the last release (which drops it, under both
locks, after its upload) cannot retire an inode that an open is about to use. An open that
finds nothing asks the store; if a release of that path retires an inode meanwhile, the
answer may predate the release's upload, and the open asks again.

Changes made to the store by path (setattr and xattrs of a file nothing here has open,
unlink, rename: a renamed directory with everything below it) are marked in ``_changing`` for
their whole length, before they look for an open inode. An open does not ask the store about
a marked path, and asks again if a change overlapped its question; so no open builds an inode
on the version a change is replacing (its next upload would bring that version back).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import struct
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from vfsframe import ops
from vfsframe.plugin import Backend

from .config import ObjectStoreConfig
from .files import FileHandle, OpenInode
from .metadata import Meta
from .store import ObjectInfo, ObjectStore, Part

log = logging.getLogger(__name__)

NAME_MAX = 255
SYMLINK_MAX = 4095
XATTR_NAME_MAX = 255
STAGING_CHUNK = 8 << 20
META_CACHE_MAX = 200_000
# A name this server just failed to find: create/mkdir trust that for this long instead of
# asking the store again (the kernel's own negative entry lasts as long).
NEGATIVE_TTL = 1.0
BLOCK = 512
FETCH_WORKERS = 16


def _error(code: int, path: str = "") -> OSError:
    return OSError(code, os.strerror(code), path) if path else OSError(code, os.strerror(code))


def _key(path: str) -> str:
    return path.strip("/")


def _check_name(path: str) -> None:
    name = path.rsplit("/", 1)[-1]
    if name in ("", ".", ".."):
        raise _error(errno.EINVAL, path)
    if len(os.fsencode(name)) > NAME_MAX:
        raise _error(errno.ENAMETOOLONG, path)


@dataclass(slots=True, eq=False)  # compared by identity: several may wait on one path
class _Lookup:
    """An open asking the store about a path nothing here has open."""

    overtaken: bool = False  # an inode of the path was retired meanwhile: the answer may be old


@dataclass(slots=True)
class Found:
    """What a path is in the store right now."""

    kind: int  # S_IFREG, S_IFDIR or S_IFLNK
    meta: Meta
    info: ObjectInfo | None  # the object (file, symlink, directory marker), if any


class ObjectStoreBackend(Backend):
    """POSIX-ish files over an object store: the semantics table is in the docs."""

    def __init__(self, config: ObjectStoreConfig, store: ObjectStore) -> None:
        self.config = config
        self.store = store
        self.needs_network = store.needs_network
        self.host_paths = config.host_paths
        self._uid = os.getuid() if config.uid is None else config.uid
        self._gid = os.getgid() if config.gid is None else config.gid
        self._part = int(config.part_size)
        self._threshold = int(config.multipart_threshold)
        self._readahead = int(config.readahead)
        self._staging_dir = str(config.staging_dir or tempfile.gettempdir())
        self._pool = ThreadPoolExecutor(config.upload_concurrency, "objectstore-upload")
        # Background GETs (readahead) and HEADs (attributes for listings): never nested.
        self._fetch_pool = ThreadPoolExecutor(FETCH_WORKERS, "objectstore-fetch")
        self._lock = threading.Lock()
        # path → st_ino, kept while the server runs: the session keys nodes by st_ino.
        self._inos: dict[str, int] = {"/": 1}
        self._next_ino = 2
        self._open: dict[str, OpenInode] = {}  # path → inode, while open
        self._lookups: dict[str, list[_Lookup]] = {}  # path → opens asking the store about it
        # path → changes by path under way; "path/" for a change of everything below it.
        self._changing: dict[str, int] = {}
        self._settled = threading.Condition(self._lock)  # notified when a change ends
        self._misses: dict[str, float] = {}  # path → when getattr found nothing
        self._dirs: dict[str, bool] = {}  # path → whether it was a directory when last found
        # key → (version, meta) of objects seen, so listings can carry full attributes.
        self._meta_cache: OrderedDict[str, tuple[str, Meta]] = OrderedDict()
        self._started = time.time_ns()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._fetch_pool.shutdown(wait=True)
        self.store.close()

    # -- tables --------------------------------------------------------------------------

    def _ino(self, path: str) -> int:
        with self._lock:
            ino = self._inos.get(path)
            if ino is None:
                ino = self._inos[path] = self._next_ino
                self._next_ino += 1
            return ino

    def _forget_path(self, path: str) -> None:
        with self._lock:
            self._inos.pop(path, None)

    def _remember_meta(self, info: ObjectInfo, meta: Meta) -> None:
        with self._lock:
            self._meta_cache[info.key] = (info.version, meta)
            self._meta_cache.move_to_end(info.key)
            while len(self._meta_cache) > META_CACHE_MAX:
                self._meta_cache.popitem(last=False)

    def _cached_meta(self, info: ObjectInfo) -> Meta | None:
        with self._lock:
            found = self._meta_cache.get(info.key)
        return found[1] if found is not None and found[0] == info.version else None

    @contextlib.contextmanager
    def _changing_paths(self, *paths: str, below: bool = False) -> Iterator[None]:
        """Mark ``paths`` (``below``: and everything below them) as being changed in the
        store by path while the body runs: opens wait for the change, and those that asked
        the store meanwhile ask again."""
        marks = [path.rstrip("/") + "/" for path in paths] if below else list(paths)
        with self._lock:
            for mark in marks:
                self._changing[mark] = self._changing.get(mark, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                for mark in marks:
                    left = self._changing.pop(mark) - 1
                    if left:
                        self._changing[mark] = left
                for path, lookups in self._lookups.items():
                    if any(_covers(mark, path) for mark in marks):
                        for lookup in lookups:
                            lookup.overtaken = True
                self._settled.notify_all()

    def _being_changed(self, path: str) -> bool:
        """Whether a change by path covers ``path`` (call with ``_lock``)."""
        return bool(self._changing) and any(_covers(mark, path) for mark in self._changing)

    def _open_inode(self, path: str) -> OpenInode | None:
        with self._lock:
            return self._open.get(path)

    def _missed_recently(self, path: str) -> bool:
        with self._lock:
            when = self._misses.get(path)
        return when is not None and time.monotonic() - when < NEGATIVE_TTL

    def _appeared(self, path: str) -> None:
        """``path`` (and anything under it) exists now: drop remembered misses."""
        below = path.rstrip("/") + "/"
        with self._lock:
            self._misses.pop(path, None)
            if self._misses:
                for stale in [p for p in self._misses if p.startswith(below)]:
                    del self._misses[stale]

    # -- attributes ----------------------------------------------------------------------

    def _default_meta(self, kind: int, mtime_ns: int) -> Meta:
        bits = self.config.dir_mode if kind == stat.S_IFDIR else self.config.file_mode
        return Meta(kind | bits, self._uid, self._gid, mtime_ns)

    def _meta_of(self, info: ObjectInfo, kind: int) -> Meta:
        default = self.config.dir_mode if kind == stat.S_IFDIR else self.config.file_mode
        meta = Meta.decode(info.metadata, kind | default, self._uid, self._gid, info.mtime_ns)
        self._remember_meta(info, meta)
        return meta

    def _attr(self, path: str, meta: Meta, size: int, ino: int | None = None) -> ops.Attr:
        kind = stat.S_IFMT(meta.mode)
        return ops.Attr(
            st_ino=self._ino(path) if ino is None else ino,
            st_mode=meta.mode,
            st_nlink=2 if kind == stat.S_IFDIR else 1,
            st_uid=meta.uid,
            st_gid=meta.gid,
            st_size=size if kind != stat.S_IFDIR else 0,
            st_blocks=(size + BLOCK - 1) // BLOCK if kind != stat.S_IFDIR else 0,
            st_blksize=1 << 20,
            st_atime_ns=meta.mtime_ns,
            st_mtime_ns=meta.mtime_ns,
            st_ctime_ns=meta.mtime_ns,
        )

    def _inode_attr(self, inode: OpenInode, path: str) -> ops.Attr:
        return self._attr(path, inode.meta, inode.size, inode.ino)

    def _find(self, path: str) -> Found:
        """What ``path`` is in the store: an object (file or symlink), a directory marker, or
        an implicit directory (keys under it, no marker). ENOENT otherwise."""
        if path == "/":
            return Found(stat.S_IFDIR, self._default_meta(stat.S_IFDIR, self._started), None)
        if self._missed_recently(path):
            # The kernel looks a new name up twice before creating it; the second answer
            # is the first one's (another mount's new name shows up within NEGATIVE_TTL).
            raise _error(errno.ENOENT, path)
        key = _key(path)
        with self._lock:
            was_dir = self._dirs.get(path, False)
        # A path last seen as a directory is checked as one first: one request, not two.
        found = (self._find_dir(key) if was_dir else None) or self._find_object(key)
        if found is None and not was_dir:
            found = self._find_dir(key)
        if found is not None:
            with self._lock:
                if len(self._dirs) > META_CACHE_MAX:
                    self._dirs.clear()
                self._dirs[path] = found.kind == stat.S_IFDIR
            return found
        with self._lock:
            self._misses[path] = time.monotonic()
            if len(self._misses) > 10_000:
                self._misses.clear()
        raise _error(errno.ENOENT, path)

    def _find_object(self, key: str) -> Found | None:
        try:
            info = self.store.head(key)
        except FileNotFoundError:
            return None
        meta = self._meta_of(info, stat.S_IFREG)
        return Found(stat.S_IFMT(meta.mode), meta, info)

    def _find_dir(self, key: str) -> Found | None:
        # One listing answers both "is there a marker" and "are there keys below": the
        # marker, when present, sorts first. A missing name costs two requests in all.
        page = self.store.list(key + "/", None, None, 1)
        if page.objects and page.objects[0].key == key + "/":
            marker = page.objects[0]
            meta = self._cached_meta(marker)
            if meta is None:
                marker = self.store.head(marker.key)
                meta = self._meta_of(marker, stat.S_IFDIR)
            meta = meta.copy()
            meta.mode = stat.S_IFDIR | stat.S_IMODE(meta.mode)
            return Found(stat.S_IFDIR, meta, marker)
        if page.objects or page.prefixes:
            return Found(stat.S_IFDIR, self._default_meta(stat.S_IFDIR, self._started), None)
        return None

    def _find_or_none(self, path: str) -> Found | None:
        try:
            return self._find(path)
        except FileNotFoundError:
            return None

    def _exists(self, path: str) -> bool:
        """For create/mkdir/symlink: whether the name is taken (here or in the store)."""
        if self._open_inode(path) is not None:
            return True
        if self._missed_recently(path):
            return False
        return self._find_or_none(path) is not None

    def vfs_getattr(self, req: ops.GetattrRequest) -> ops.Attr:
        if isinstance(req.fh, FileHandle):
            inode = req.fh.inode
            with inode.lock:
                return self._inode_attr(inode, req.path)
        inode = self._open_inode(req.path)
        if inode is not None and (inode.staging is not None or inode.info is None):
            with inode.lock:
                return self._inode_attr(inode, req.path)
        found = self._find(req.path)
        size = found.info.size if found.info is not None else 0
        return self._attr(req.path, found.meta, size)

    def vfs_setattr(self, req: ops.SetattrRequest) -> ops.Attr:
        with self._changing_paths(req.path):
            return self._setattr(req)

    def _setattr(self, req: ops.SetattrRequest) -> ops.Attr:
        writer = isinstance(req.fh, FileHandle) and req.fh.writable
        inode = req.fh.inode if isinstance(req.fh, FileHandle) else self._open_inode(req.path)
        if inode is not None:
            with inode.lock:
                # The last release may have run while we waited for the lock: then no upload
                # would follow, and the change must go to the store as for a closed file.
                clean = inode.staging is None and inode.info is not None and req.size is None
                if inode.opens > 0 and clean:
                    # To the store, under the lock: no write stages the old version meanwhile.
                    return self._setattr_stored(req, inode)
                if inode.opens > 0:
                    self._check_setattr(req, inode.meta)
                    if req.size is not None:
                        self._stage(inode, keep=req.size > 0)
                        os.ftruncate(inode.staging, req.size)  # type: ignore[arg-type]
                        inode.size = req.size
                        inode.meta.mtime_ns = time.time_ns()
                    self._apply(req, inode.meta)
                    inode.dirty = True  # attributes too go up with the next upload
                    if req.size is not None and not writer:
                        self._upload(inode)  # truncate(2) by path: no close will follow
                    return self._inode_attr(inode, req.path)
        return self._setattr_stored(req, None)

    def _setattr_stored(self, req: ops.SetattrRequest, inode: OpenInode | None) -> ops.Attr:
        """setattr of the stored object; an open clean ``inode`` (locked by the caller) takes
        the new version."""
        found = self._find(req.path)
        meta = found.meta.copy()
        self._check_setattr(req, meta)
        self._apply(req, meta)
        key = _key(req.path)
        if found.kind == stat.S_IFDIR:
            if req.size is not None:
                raise _error(errno.EISDIR, req.path)
            info = self.store.put(key + "/", b"", meta.encode_within(self.store.metadata_limit))
            self._remember_meta(info, meta)
            return self._attr(req.path, meta, 0)
        if req.size is not None:
            if found.kind != stat.S_IFREG:
                raise _error(errno.EINVAL, req.path)
            return self._truncate_closed(req.path, found, meta, req.size)
        encoded = meta.encode_within(self.store.metadata_limit)
        info = self.store.copy(key, key, encoded)
        self._remember_meta(info, meta)
        if inode is not None:
            inode.meta, inode.info, inode.size = meta.copy(), info, info.size
        return self._attr(req.path, meta, info.size)

    def _truncate_closed(self, path: str, found: Found, meta: Meta, size: int) -> ops.Attr:
        """truncate(2) of a file nobody here has open: through a short-lived staging file."""
        inode = OpenInode(self._ino(path), path, meta, found.info)
        try:
            with inode.lock:
                self._stage(inode, keep=size > 0)
                os.ftruncate(inode.staging, size)  # type: ignore[arg-type]
                inode.size = size
                inode.meta.mtime_ns = time.time_ns()
                inode.dirty = True
                self._upload(inode)
                return self._inode_attr(inode, path)
        finally:
            inode.close_staging()

    @staticmethod
    def _check_setattr(req: ops.SetattrRequest, meta: Meta) -> None:
        """The owner rules the kernel applies with default_permissions, for mounts without."""
        ctx = req.ctx
        if ctx.uid == 0:
            return
        owner = ctx.uid == meta.uid
        if req.uid is not None and not (owner and req.uid == meta.uid):
            raise _error(errno.EPERM, req.path)
        if req.gid is not None and not (owner and req.gid in (meta.gid, ctx.gid)):
            raise _error(errno.EPERM, req.path)
        if req.mode is not None and not owner:
            raise _error(errno.EPERM, req.path)
        explicit = any(t not in (None, ops.UTIME_NOW) for t in (req.atime_ns, req.mtime_ns))
        if explicit and not owner:
            raise _error(errno.EPERM, req.path)

    @staticmethod
    def _apply(req: ops.SetattrRequest, meta: Meta) -> None:
        now = time.time_ns()
        if req.mode is not None:
            meta.mode = stat.S_IFMT(meta.mode) | (req.mode & 0o7777)
        if req.uid is not None:
            meta.uid = req.uid
        if req.gid is not None:
            meta.gid = req.gid
        if (req.uid is not None or req.gid is not None) and not stat.S_ISDIR(meta.mode):
            meta.mode &= ~stat.S_ISUID
            if meta.mode & stat.S_IXGRP:
                meta.mode &= ~stat.S_ISGID
        if req.mtime_ns is not None:
            meta.mtime_ns = now if req.mtime_ns == ops.UTIME_NOW else req.mtime_ns
        if req.kill_suid and not stat.S_ISDIR(meta.mode):
            meta.mode &= ~(stat.S_ISUID | stat.S_ISGID)

    # -- names ---------------------------------------------------------------------------

    def _new_meta(self, ctx: ops.Context, mode: int) -> Meta:
        bits = mode & 0o7777 & ~ctx.umask
        if stat.S_ISLNK(mode):
            bits = 0o777
        return Meta(stat.S_IFMT(mode) | bits, ctx.uid, ctx.gid, time.time_ns())

    def vfs_mkdir(self, req: ops.MkdirRequest) -> ops.Attr:
        _check_name(req.path)
        if self._exists(req.path):
            raise _error(errno.EEXIST, req.path)
        meta = self._new_meta(req.ctx, stat.S_IFDIR | req.mode)
        self._appeared(req.path)
        with self._lock:
            self._dirs[req.path] = True
        info = self.store.put(
            _key(req.path) + "/", b"", meta.encode_within(self.store.metadata_limit)
        )
        self._remember_meta(info, meta)
        return self._attr(req.path, meta, 0)

    def vfs_rmdir(self, req: ops.RmdirRequest) -> None:
        if req.path == "/":
            raise _error(errno.EBUSY, req.path)
        found = self._find(req.path)
        if found.kind != stat.S_IFDIR:
            raise _error(errno.ENOTDIR, req.path)
        prefix = _key(req.path) + "/"
        page = self.store.list(prefix, None, None, 2)
        if any(o.key != prefix for o in page.objects) or self._open_under(req.path):
            raise _error(errno.ENOTEMPTY, req.path)
        self.store.delete(prefix)
        self._forget_path(req.path)

    def _open_under(self, path: str) -> list[OpenInode]:
        start = path.rstrip("/") + "/"
        with self._lock:
            return [inode for p, inode in self._open.items() if p.startswith(start)]

    def vfs_symlink(self, req: ops.SymlinkRequest) -> ops.Attr:
        _check_name(req.path)
        target = os.fsencode(req.target)
        if not target:
            raise _error(errno.ENOENT, req.path)
        if len(target) > SYMLINK_MAX:
            raise _error(errno.ENAMETOOLONG, req.path)
        if self._exists(req.path):
            raise _error(errno.EEXIST, req.path)
        meta = self._new_meta(req.ctx, stat.S_IFLNK | 0o777)
        self._appeared(req.path)
        info = self.store.put(_key(req.path), target, meta.encode_within(self.store.metadata_limit))
        self._remember_meta(info, meta)
        return self._attr(req.path, meta, len(target))

    def vfs_readlink(self, req: ops.ReadlinkRequest) -> str:
        found = self._find(req.path)
        if found.kind != stat.S_IFLNK:
            raise _error(errno.EINVAL, req.path)
        return os.fsdecode(self.store.get(_key(req.path)))

    def vfs_mknod(self, req: ops.MknodRequest) -> ops.Attr:
        if stat.S_IFMT(req.mode) not in (0, stat.S_IFREG):
            # FIFOs, sockets and devices have no object-store meaning.
            raise _error(errno.EPERM, req.path)
        _check_name(req.path)
        if self._exists(req.path):
            raise _error(errno.EEXIST, req.path)
        meta = self._new_meta(req.ctx, stat.S_IFREG | (req.mode & 0o7777))
        self._appeared(req.path)
        info = self.store.put(_key(req.path), b"", meta.encode_within(self.store.metadata_limit))
        self._remember_meta(info, meta)
        return self._attr(req.path, meta, 0)

    def vfs_link(self, req: ops.LinkRequest) -> ops.Attr:
        raise _error(errno.EPERM, req.new)  # an object has one key: no hard links

    def vfs_unlink(self, req: ops.UnlinkRequest) -> None:
        with self._changing_paths(req.path):
            self._unlink(req.path)

    def _unlink(self, path: str) -> None:
        inode = self._open_inode(path)
        if inode is None or inode.info is not None:
            found = self._find(path)
            if found.kind == stat.S_IFDIR:
                raise _error(errno.EISDIR, path)
            self.store.delete(_key(path))
        with self._lock:
            inode = self._open.pop(path, None)
            self._inos.pop(path, None)
        if inode is not None:
            with inode.lock:
                inode.path = None  # open handles live on; nothing is uploaded for them

    def vfs_rename(self, req: ops.RenameRequest) -> None:
        if req.flags & ~ops.RENAME_NOREPLACE:
            raise _error(errno.EINVAL, req.old)  # no atomic exchange or whiteouts in a store
        if req.old == "/" or req.new == "/":
            raise _error(errno.EBUSY, req.old)
        _check_name(req.new)
        with self._changing_paths(req.old, req.new, below=True):
            self._rename(req)

    def _rename(self, req: ops.RenameRequest) -> None:
        inode = self._open_inode(req.old)
        source = self._find(req.old) if inode is None or inode.info is not None else None
        target = self._find_or_none(req.new)
        if target is None and self._open_inode(req.new) is not None:
            target = Found(stat.S_IFREG, self._default_meta(stat.S_IFREG, 0), None)
        if target is not None and req.flags & ops.RENAME_NOREPLACE:
            raise _error(errno.EEXIST, req.new)
        if req.old == req.new:
            return
        if source is not None and source.kind == stat.S_IFDIR:
            if req.new.startswith(req.old.rstrip("/") + "/"):
                raise _error(errno.EINVAL, req.new)
            if target is not None:
                if target.kind != stat.S_IFDIR:
                    raise _error(errno.ENOTDIR, req.new)
                prefix = _key(req.new) + "/"
                page = self.store.list(prefix, None, None, 2)
                if any(o.key != prefix for o in page.objects) or self._open_under(req.new):
                    raise _error(errno.ENOTEMPTY, req.new)
            self._rename_tree(req.old, req.new, source)
            return
        if target is not None and target.kind == stat.S_IFDIR:
            raise _error(errno.EISDIR, req.new)
        self._rename_file(req.old, req.new, inode)

    def _rename_file(self, old: str, new: str, inode: OpenInode | None) -> None:
        old_key, new_key = _key(old), _key(new)
        if inode is not None:
            with inode.lock:
                if inode.dirty or inode.info is None:
                    # The unsaved file goes straight to its new name.
                    stored = inode.info is not None
                    inode.path = new
                    try:
                        self._upload(inode)
                    except BaseException:
                        inode.path = old  # the rename did not happen
                        raise
                    if stored:
                        self.store.delete(old_key)
                else:
                    inode.info = self.store.copy(old_key, new_key)
                    self.store.delete(old_key)
                    inode.path = new
        else:
            self.store.copy(old_key, new_key)
            self.store.delete(old_key)
        self._moved(old, new)

    def _moved(self, old: str, new: str) -> None:
        """Carry inode numbers and open inodes from ``old`` (and below it) to ``new``."""
        self._appeared(new)
        below = old.rstrip("/") + "/"
        with self._lock:
            replaced = self._open.get(new)
            if replaced is not None and replaced is not self._open.get(old):
                replaced.path = None  # unlinked by the rename: its handles upload nothing
            for table in (self._inos, self._open):
                table.pop(new, None)  # type: ignore[attr-defined]
                for path in [p for p in table if p == old or p.startswith(below)]:
                    table[new + path[len(old) :]] = table.pop(path)  # type: ignore[index]
            for path, inode in self._open.items():
                if inode.path is not None and (inode.path == old or inode.path.startswith(below)):
                    inode.path = path

    def _rename_tree(self, old: str, new: str, source: Found) -> None:
        """Copy every key under the old prefix to the new one, then delete the old keys.
        Not atomic: a failure leaves the source whole and the target partly copied."""
        old_prefix, new_prefix = _key(old) + "/", _key(new) + "/"
        keys = [o.key for page in self.store.list_all(old_prefix) for o in page.objects]
        if old_prefix not in keys:
            keys.append("")  # an implicit directory: give the new one a marker
        futures = []
        for key in keys:
            if key == "":
                meta = source.meta.encode_within(self.store.metadata_limit)
                futures.append(self._pool.submit(self.store.put, new_prefix, b"", meta))
            else:
                target = new_prefix + key[len(old_prefix) :]
                futures.append(self._fetch_pool.submit(self.store.copy, key, target))
        failure: BaseException | None = None
        for future in futures:
            try:
                info = future.result()
            except BaseException as exc:
                failure = failure or exc
            else:
                if info.metadata is not None:  # listings of the new tree need no HEADs
                    kind = stat.S_IFDIR if info.key.endswith("/") else stat.S_IFREG
                    self._meta_of(info, kind)
        if failure is not None:
            raise failure
        self.store.delete_many(k for k in keys if k)
        self._moved(old, new)

    # -- open files ----------------------------------------------------------------------

    def _open_counted(
        self, path: str, build: Callable[[], OpenInode], exclusive: bool = False
    ) -> tuple[OpenInode, bool]:
        """``path``'s open inode with this open counted, and whether it is new: the inode
        open here, else one ``build`` makes from what the store has (``exclusive``: an inode
        open here is EEXIST). The count is taken in the same ``_lock`` section that finds or
        adds the inode, so no release retires it in between. A change by path of ``path`` is
        waited for; one that overlapped ``build`` makes it ask again."""
        while True:
            with self._lock:
                while self._being_changed(path):
                    self._settled.wait()
                inode = self._open.get(path)
                if inode is not None:
                    if exclusive:
                        raise _error(errno.EEXIST, path)
                    inode.opens += 1
                    return inode, False
                lookup = _Lookup()
                self._lookups.setdefault(path, []).append(lookup)
            try:
                fresh = build()
            except BaseException:
                with self._lock:
                    self._end_lookup(path, lookup)
                raise
            with self._lock:
                self._end_lookup(path, lookup)
                lookup.overtaken = lookup.overtaken or self._being_changed(path)
                inode = self._open.get(path)
                if inode is None and not lookup.overtaken:
                    fresh.opens = 1
                    self._open[path] = fresh
                elif inode is not None and not exclusive:
                    inode.opens += 1
            if inode is None and not lookup.overtaken:
                return fresh, True
            fresh.close_staging()
            if inode is not None:
                if exclusive:
                    raise _error(errno.EEXIST, path)
                return inode, False
            # A release uploaded the path while the store was asked: ask again.

    def _end_lookup(self, path: str, lookup: _Lookup) -> None:
        """Forget an open's question about ``path`` (call with ``_lock``)."""
        lookups = self._lookups.get(path)
        if lookups is not None:
            lookups.remove(lookup)
            if not lookups:
                del self._lookups[path]

    def _refresh(self, inode: OpenInode, path: str) -> None:
        """close-to-open: a new open of a clean stored inode sees the store's current version
        (asked after counting the open, so the inode cannot be retired meanwhile)."""
        before = inode.info  # unlocked: an open does not wait for another handle's upload
        if inode.staging is not None or before is None:
            return
        found = self._find(path)
        if found.kind == stat.S_IFDIR:
            raise _error(errno.EISDIR, path)
        if found.kind == stat.S_IFLNK:
            raise _error(errno.ELOOP, path)
        with inode.lock:
            # Unless a write or a setattr changed the inode meanwhile (it is newer then).
            if inode.staging is None and inode.info is before and inode.path == path:
                inode.info, inode.meta = found.info, found.meta.copy()
                inode.size = found.info.size if found.info else 0

    def _truncate_opened(self, inode: OpenInode, flags: int) -> None:
        if flags & os.O_TRUNC and flags & os.O_ACCMODE != os.O_RDONLY:
            with inode.lock:
                self._stage(inode, keep=False)
                os.ftruncate(inode.staging, 0)  # type: ignore[arg-type]
                inode.size = 0
                inode.meta.mtime_ns = time.time_ns()
                inode.dirty = True

    def _stored_inode(self, path: str, found: Found) -> OpenInode:
        return OpenInode(self._ino(path), path, found.meta.copy(), found.info)

    def vfs_open(self, req: ops.OpenRequest) -> FileHandle:
        def build() -> OpenInode:
            found = self._find(req.path)
            if found.kind == stat.S_IFDIR:
                raise _error(errno.EISDIR, req.path)
            if found.kind == stat.S_IFLNK:
                raise _error(errno.ELOOP, req.path)
            return self._stored_inode(req.path, found)

        inode, new = self._open_counted(req.path, build)
        handle = FileHandle(inode, req.flags)
        try:
            if req.flags & os.O_DIRECTORY:
                raise _error(errno.ENOTDIR, req.path)
            if not new:
                self._refresh(inode, req.path)
            self._truncate_opened(inode, req.flags)
            info = inode.info if inode.staging is None else None
            if info is not None:
                # Pin the version now (no request: the HEAD above named it), so that reads
                # after an unlink or a replacement still see what was opened where the store
                # can (the local store holds the file open).
                handle.reader = self.store.open_reader(_key(req.path), info)
        except BaseException:
            self.vfs_release(ops.ReleaseRequest(req.ctx, req.path, handle))
            raise
        return handle

    def vfs_create(self, req: ops.CreateRequest) -> tuple[FileHandle, ops.Attr]:
        _check_name(req.path)
        exclusive = bool(req.flags & os.O_EXCL)

        def build() -> OpenInode:
            found = None if self._missed_recently(req.path) else self._find_or_none(req.path)
            if found is not None:
                if exclusive:
                    raise _error(errno.EEXIST, req.path)
                if found.kind == stat.S_IFDIR:
                    raise _error(errno.EISDIR, req.path)
                return self._stored_inode(req.path, found)
            meta = self._new_meta(req.ctx, stat.S_IFREG | req.mode)
            self._appeared(req.path)
            fresh = OpenInode(self._ino(req.path), req.path, meta, None)
            with fresh.lock:
                self._stage(fresh, keep=False)
                fresh.dirty = True  # an empty file is uploaded at the first flush
            return fresh

        inode, _ = self._open_counted(req.path, build, exclusive)
        handle = FileHandle(inode, req.flags)
        try:
            self._truncate_opened(inode, req.flags)  # a no-op but for mtime on a new file
            return handle, self._inode_attr(inode, req.path)
        except BaseException:
            self.vfs_release(ops.ReleaseRequest(req.ctx, req.path, handle))
            raise

    def _stage(self, inode: OpenInode, keep: bool) -> None:
        """Give the inode a staging file (call with its lock); ``keep``: fill it with the
        stored bytes first (a write into an existing file needs them)."""
        if inode.staging is not None:
            return
        try:
            fd = os.open(self._staging_dir, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
        except OSError:  # a filesystem without O_TMPFILE
            fd, name = tempfile.mkstemp(dir=self._staging_dir, prefix="vfsframe-staging-")
            os.unlink(name)
        try:
            if keep and inode.info is not None:
                if inode.path is None:
                    # Unlinked before its first write: the stored bytes are gone, and
                    # writing around them would make up a file that never existed.
                    raise _error(errno.ESTALE)
                self._download(inode, fd)
        except BaseException:
            os.close(fd)
            raise
        inode.staging = fd

    def _download(self, inode: OpenInode, fd: int) -> None:
        assert inode.info is not None and inode.path is not None
        reader = self.store.open_reader(_key(inode.path), inode.info)
        try:
            buffer = bytearray(min(STAGING_CHUNK, max(reader.size, 1)))
            offset = 0
            while offset < reader.size:
                count = reader.read_into(offset, [memoryview(buffer)])
                if count == 0:
                    raise _error(errno.EIO, inode.path)
                os.pwrite(fd, memoryview(buffer)[:count], offset)
                offset += count
            inode.size = reader.size
        finally:
            reader.close()

    def vfs_read(self, req: ops.ReadRequest) -> bytes | int:
        if req.offset < 0:
            raise _error(errno.EINVAL, req.path)
        handle: FileHandle = req.fh
        inode = handle.inode
        with inode.lock:
            if inode.staging is not None or inode.info is None:
                if inode.staging is None:
                    return 0 if req.buffers else b""
                if req.buffers:
                    views = _clip(req.buffers, req.size)
                    return os.preadv(inode.staging, views, req.offset)
                return os.pread(inode.staging, req.size, req.offset)
            info, path = inode.info, inode.path
        with handle.lock:
            if handle.reader is None:
                if path is None:
                    raise _error(errno.ESTALE, req.path)
                handle.reader = self.store.open_reader(_key(path), info)
            return handle.read(
                handle.reader, req.offset, req.size, req.buffers, self._readahead, self._fetch_pool
            )

    def vfs_write(self, req: ops.WriteRequest) -> int:
        if req.offset < 0:
            raise _error(errno.EINVAL, req.path)
        handle: FileHandle = req.fh
        if not handle.writable:
            raise _error(errno.EBADF, req.path)
        inode = handle.inode
        with inode.lock:
            self._stage(inode, keep=True)
            fd = inode.staging
            assert fd is not None
            # O_APPEND from the request, not the handle: see the memory backend's reasoning.
            offset = inode.size if req.flags & os.O_APPEND else req.offset
            written = os.pwritev(fd, req.data, offset)
            inode.size = max(inode.size, offset + written)
            inode.meta.mtime_ns = time.time_ns()
            if inode.meta.mode & (stat.S_ISUID | stat.S_ISGID) and req.ctx.uid != 0:
                inode.meta.mode &= ~stat.S_ISUID
                if inode.meta.mode & stat.S_IXGRP:
                    inode.meta.mode &= ~stat.S_ISGID
            inode.dirty = True
            return written

    def vfs_flush(self, req: ops.FlushRequest) -> None:
        if isinstance(req.fh, FileHandle) and req.fh.writable:
            with req.fh.inode.lock:
                self._upload(req.fh.inode)

    def vfs_fsync(self, req: ops.FsyncRequest) -> None:
        if isinstance(req.fh, FileHandle):
            with req.fh.inode.lock:
                self._upload(req.fh.inode)

    def vfs_release(self, req: ops.ReleaseRequest) -> None:
        handle = req.fh
        if not isinstance(handle, FileHandle):
            return
        handle.close()
        inode = handle.inode
        with inode.lock:
            with self._lock:
                inode.opens -= 1
                if inode.opens > 0:
                    return
            failure: OSError | None = None
            try:
                self._upload(inode)
            except OSError as exc:
                failure = exc
            with self._lock:
                # An open may have found the inode during the upload: it carries on with it
                # (staging and all) and its own release uploads what is left.
                retired = inode.opens == 0
                if retired and inode.path is not None:
                    if self._open.get(inode.path) is inode:
                        del self._open[inode.path]
                    for lookup in self._lookups.get(inode.path, ()):
                        lookup.overtaken = True
            if retired:
                inode.close_staging()
            if failure is not None and retired:
                # The last chance has passed: close(2) already reported the failure.
                log.error("objectstore: unsaved data of %s dropped: %s", inode.path, failure)

    def _upload(self, inode: OpenInode) -> None:
        """Store the staging file (call with the inode's lock): one PUT, or a multipart upload
        from the threshold on. Returns only when the store has it; raises otherwise (the
        inode stays dirty, so a later flush/fsync/close tries again)."""
        if not inode.dirty or inode.path is None:
            return
        key = _key(inode.path)
        metadata = inode.meta.encode_within(self.store.metadata_limit)
        if inode.staging is None:  # attributes of a clean inode changed
            info = self.store.copy(key, key, metadata)
        elif inode.size < self._threshold:
            data = os.pread(inode.staging, inode.size, 0)
            info = self.store.put(key, data, metadata)
        else:
            info = self._upload_parts(key, inode.staging, inode.size, metadata)
        inode.info = info
        inode.dirty = False
        self._remember_meta(info, inode.meta.copy())

    def _upload_parts(self, key: str, fd: int, size: int, metadata: dict[str, str]) -> ObjectInfo:
        part = max(self._part, -(-size // self.store.max_parts))
        upload_id = self.store.create_multipart(key, metadata)

        def send(number: int, offset: int) -> Part:
            data = os.pread(fd, min(part, size - offset), offset)
            return self.store.upload_part(key, upload_id, number, data)

        try:
            futures = [
                self._pool.submit(send, number, offset)
                for number, offset in enumerate(range(0, size, part), 1)
            ]
            parts = [future.result() for future in futures]
            return self.store.complete_multipart(key, upload_id, parts)
        except BaseException:
            for future in futures:
                future.cancel()
            self.store.abort_multipart(key, upload_id)
            raise

    def vfs_fallocate(self, req: ops.FallocateRequest) -> None:
        raise _error(errno.EOPNOTSUPP, req.path)

    # -- directories ---------------------------------------------------------------------

    def vfs_opendir(self, req: ops.OpendirRequest) -> None:
        return None

    def vfs_readdir(self, req: ops.ReaddirRequest) -> list[ops.DirEntry]:
        return list(self._entries(req.path))

    def _entries(self, path: str) -> Iterator[ops.DirEntry]:
        prefix = "" if path == "/" else _key(path) + "/"
        base = "/" if path == "/" else path.rstrip("/") + "/"
        seen: set[str] = set()
        token: str | None = None
        while True:
            page = self.store.list(prefix, "/", token, self.config.list_page_size)
            metas = self._page_metadata(page.objects)
            for info, meta in zip(page.objects, metas, strict=True):
                name = info.key[len(prefix) :]
                if not _listable(name) or name in seen:
                    continue
                seen.add(name)
                child = base + name
                attr = self._attr(child, meta, info.size) if meta is not None else None
                mode = meta.mode if meta is not None else stat.S_IFREG
                yield ops.DirEntry(name, self._ino(child), mode, attr)
            for sub in page.prefixes:
                name = sub[len(prefix) : -1]
                if not _listable(name) or name in seen:
                    continue  # a file of the same name shadows the directory
                seen.add(name)
                yield ops.DirEntry(name, self._ino(base + name), stat.S_IFDIR, None)
            token = page.token
            if token is None:
                break
        # Files created here and not uploaded yet.
        with self._lock:
            pending = [
                (p, inode) for p, inode in self._open.items() if p.rpartition("/")[0] + "/" == base
            ]
        for child, inode in pending:
            name = child.rpartition("/")[2]
            if name not in seen:
                yield ops.DirEntry(name, inode.ino, inode.meta.mode, None)

    def _page_metadata(self, objects: list[ObjectInfo]) -> list[Meta | None]:
        """Attributes for a listing page: a listing has no user metadata, so objects not
        seen before are HEADed, many at once. Entries get full attributes, and READDIRPLUS
        needs no getattr per name."""
        metas: list[Meta | None] = [self._cached_meta(info) for info in objects]
        missing = [index for index, meta in enumerate(metas) if meta is None]
        if self.config.listing_attributes == "listing":
            for index in missing:
                metas[index] = self._default_meta(stat.S_IFREG, objects[index].mtime_ns)
            return metas
        heads = self._fetch_pool.map(self._head_or_none, [objects[i].key for i in missing])
        for index, info in zip(missing, heads, strict=True):
            if info is not None:
                kind = stat.S_IFDIR if info.key.endswith("/") else stat.S_IFREG
                metas[index] = self._meta_of(info, kind)
        return metas

    def _head_or_none(self, key: str) -> ObjectInfo | None:
        try:
            return self.store.head(key)
        except OSError:
            return None  # gone meanwhile, or unreadable: the session asks getattr for it

    def vfs_releasedir(self, req: ops.ReleasedirRequest) -> None:
        return None

    def vfs_fsyncdir(self, req: ops.FsyncdirRequest) -> None:
        return None  # directory changes are stored before their operation returns

    # -- extended attributes -------------------------------------------------------------

    def _xattrs_of(self, path: str) -> dict[str, bytes]:
        inode = self._open_inode(path)
        if inode is not None and (inode.staging is not None or inode.info is None):
            return inode.meta.xattrs
        return self._find(path).meta.xattrs

    def _change_xattrs(self, path: str, change: Callable[[Meta], None]) -> None:
        with self._changing_paths(path):
            self._change_open_or_stored_xattrs(path, change)

    def _change_open_or_stored_xattrs(self, path: str, change: Callable[[Meta], None]) -> None:
        inode = self._open_inode(path)
        if inode is not None:
            with inode.lock:
                # The last release may have retired the inode while we waited for its lock:
                # then no upload follows, and the change goes to the store as for a closed file.
                if inode.opens > 0:
                    if inode.staging is not None or inode.info is None:
                        meta = inode.meta.copy()
                        change(meta)
                        inode.meta = meta
                        inode.dirty = True  # goes up with the data at the next flush
                    else:
                        # Under the lock: a write cannot stage the old version meanwhile.
                        self._change_stored_xattrs(path, change, inode)
                    return
        self._change_stored_xattrs(path, change, None)

    def _change_stored_xattrs(
        self, path: str, change: Callable[[Meta], None], inode: OpenInode | None
    ) -> None:
        """Change the stored object's metadata; an open clean ``inode`` (locked by the
        caller) takes the new version, so its next upload keeps the change."""
        found = self._find(path)
        meta = found.meta.copy()
        change(meta)
        encoded = meta.encode_within(self.store.metadata_limit)
        key = _key(path)
        if found.kind == stat.S_IFDIR:
            info = self.store.put(key + "/", b"", encoded)
        else:
            info = self.store.copy(key, key, encoded)
        self._remember_meta(info, meta)
        if inode is not None and found.kind != stat.S_IFDIR:
            inode.meta, inode.info, inode.size = meta.copy(), info, info.size

    def vfs_setxattr(self, req: ops.SetxattrRequest) -> None:
        _check_xattr_name(req.name)
        if req.flags & ~(os.XATTR_CREATE | os.XATTR_REPLACE):
            raise _error(errno.EINVAL, req.name)
        if req.name in (ACL_ACCESS, ACL_DEFAULT):
            # No ACLs in object metadata; an ACL that only restates the mode is a chmod
            # (cp -a and tar set permissions this way).
            bits = _acl_mode(req.value) if req.name == ACL_ACCESS else None
            if bits is None:
                raise _error(errno.EOPNOTSUPP, req.name)

            def chmod(meta: Meta) -> None:
                meta.mode = stat.S_IFMT(meta.mode) | (meta.mode & 0o7000) | bits

            self._change_xattrs(req.path, chmod)
            return
        if len(req.value) > self.store.metadata_limit:
            raise _error(errno.E2BIG, req.name)

        def change(meta: Meta) -> None:
            present = req.name in meta.xattrs
            if present and req.flags & os.XATTR_CREATE:
                raise _error(errno.EEXIST, req.name)
            if not present and req.flags & os.XATTR_REPLACE:
                raise _error(errno.ENODATA, req.name)
            meta.xattrs[req.name] = bytes(req.value)

        self._change_xattrs(req.path, change)

    def vfs_getxattr(self, req: ops.GetxattrRequest) -> bytes:
        _check_xattr_name(req.name)
        if req.name in (ACL_ACCESS, ACL_DEFAULT):
            raise _error(errno.ENODATA, req.name)
        value = self._xattrs_of(req.path).get(req.name)
        if value is None:
            raise _error(errno.ENODATA, req.name)
        return value

    def vfs_listxattr(self, req: ops.ListxattrRequest) -> list[str]:
        return list(self._xattrs_of(req.path))

    def vfs_removexattr(self, req: ops.RemovexattrRequest) -> None:
        _check_xattr_name(req.name)

        def change(meta: Meta) -> None:
            if meta.xattrs.pop(req.name, None) is None:
                raise _error(errno.ENODATA, req.name)

        self._change_xattrs(req.path, change)

    # -- filesystem ----------------------------------------------------------------------

    def vfs_statfs(self, req: ops.StatfsRequest) -> ops.StatFs:
        # A bucket has no size: report a large, constant one (df shows it as nearly empty).
        blocks = 1 << 40
        return ops.StatFs(4096, 4096, blocks, blocks, blocks, 1 << 40, 1 << 40, NAME_MAX)

    def _upload_all(self) -> None:
        with self._lock:
            inodes = list(self._open.values())
        failure: OSError | None = None
        for inode in inodes:
            with inode.lock:
                try:
                    self._upload(inode)
                except OSError as exc:
                    failure = failure or exc
        if failure is not None:
            raise failure

    def vfs_syncfs(self, req: ops.SyncfsRequest) -> None:
        self._upload_all()

    def vfs_destroy(self, req: ops.DestroyRequest) -> None:
        try:
            self._upload_all()
        except OSError as exc:
            log.error("objectstore: unsaved data at unmount: %s", exc)


def _covers(mark: str, path: str) -> bool:
    """Whether a ``_changing`` mark covers ``path``: the path itself, or, for a mark ending
    in "/", anything below it."""
    return path == mark or (mark.endswith("/") and (path + "/").startswith(mark))


def _listable(name: str) -> bool:
    return bool(name) and name not in (".", "..") and len(os.fsencode(name)) <= NAME_MAX


ACL_ACCESS = "system.posix_acl_access"
ACL_DEFAULT = "system.posix_acl_default"
_ACL_HEADER = struct.Struct("<I")
_ACL_ENTRY = struct.Struct("<HHI")
_ACL_USER_OBJ, _ACL_GROUP_OBJ, _ACL_MASK, _ACL_OTHER = 0x01, 0x04, 0x10, 0x20


def _acl_mode(value: bytes) -> int | None:
    """The permission bits of an access ACL made of only the owner, group (or mask) and
    other entries; None for an ACL that needs named entries."""
    if len(value) < _ACL_HEADER.size or (len(value) - _ACL_HEADER.size) % _ACL_ENTRY.size:
        return None
    perms: dict[int, int] = {}
    for offset in range(_ACL_HEADER.size, len(value), _ACL_ENTRY.size):
        tag, perm, _ = _ACL_ENTRY.unpack_from(value, offset)
        if tag not in (_ACL_USER_OBJ, _ACL_GROUP_OBJ, _ACL_MASK, _ACL_OTHER):
            return None
        perms[tag] = perm & 0o7
    if not {_ACL_USER_OBJ, _ACL_GROUP_OBJ, _ACL_OTHER} <= perms.keys():
        return None
    group = perms.get(_ACL_MASK, perms[_ACL_GROUP_OBJ])
    return perms[_ACL_USER_OBJ] << 6 | group << 3 | perms[_ACL_OTHER]


def _check_xattr_name(name: str) -> None:
    if not name or len(os.fsencode(name)) > XATTR_NAME_MAX:
        raise _error(errno.ERANGE, name)


def _clip(buffers: Any, size: int) -> list[memoryview]:
    views, left = [], size
    for buffer in buffers:
        if left <= 0:
            break
        views.append(buffer[:left])
        left -= len(views[-1])
    return views
