"""The `cache` middleware: attributes, listings and data blocks of a slow backend.

Where it sits. Whatever its place in the config, the cache keeps what the *backend* answered:
its wrappers are ``trylast`` (innermost of all wrappers) and a hit is answered by a
``tryfirst`` plain implementation, which pluggy runs instead of the backend. Every other
middleware therefore wraps hits exactly as it wraps misses: an acl listed after the cache
still checks every request, an idmap still maps cached attributes once, a log still logs
hits. The innermost wrapper decides hit or miss and hands the answer to the tryfirst
implementation through a thread-local (the two run back to back on one thread).

Correctness. Every operation that may change the share invalidates what it may have made
stale, after the backend answered (and also when it failed, as a failure may be partial). A
fill that raced with any invalidation is discarded: fills remember an epoch counter that
every invalidation bumps. File data is keyed by inode number, so a write through one name
(or handle) is seen through every other name and open handle.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Generator
from typing import Any

from vfsframe import ops
from vfsframe.hookspecs import hookimpl
from vfsframe.plugin import Middleware
from vfsframe_plugins._opclasses import (
    MUTATING,
    child_of,
    install_wrappers,
    parent_of,
    writes_on_open,
)

from .blocks import BlockCache
from .config import CacheConfig

Listing = tuple[tuple[str, int, int], ...]  # (name, ino, mode) per entry; attrs live apart


class CacheMiddleware(Middleware):
    def __init__(self, config: CacheConfig) -> None:
        self.config = config
        self.attr_ttl = config.attr_ttl
        self.dir_ttl = config.dir_ttl
        self.data_ttl = config.data_ttl
        self.max_entries = config.max_entries
        self.max_listings = max(1, config.max_entries // 10)
        self.block_size = int(config.block_size)
        self.readahead = int(config.readahead)
        self.blocks: BlockCache | None = None
        if config.memory:
            self.blocks = BlockCache(
                self.block_size, int(config.memory), config.spill_dir, int(config.spill_size)
            )
        self._lock = threading.Lock()
        self._epoch = 0
        self._attrs: OrderedDict[str, tuple[Any, float]] = OrderedDict()
        self._listings: OrderedDict[str, tuple[Listing, float]] = OrderedDict()
        self._inos: dict[str, int] = {}
        self._names: dict[int, set[str]] = {}
        # Directories with something cached beneath them: renames and rmdirs of any other
        # path need not scan the tables for a subtree.
        self._parents: set[str] = set()
        # Paths whose cached attributes show more than one name: only these can be another
        # name of an inode the cache does not know (directories have a single name).
        self._linked: set[str] = set()
        # The file signature (mtime, size) the cached blocks of an inode were read at.
        self._signatures: dict[int, tuple[int, int]] = {}
        self._next_offset: OrderedDict[int, int] = OrderedDict()  # sequential-read detection
        self._answer = threading.local()
        # id() of open handles that may write: their flush/release/fsync invalidates.
        self._writers: set[int] = set()
        # Data generation of each inode (bumped whenever its blocks are dropped), and what
        # each open handle saw at open: (ino, generation, era).
        self._data_gen: dict[int, int] = {}
        self._opened: dict[int, tuple[int, int, int]] = {}
        self._era = 0
        # (path, xattr name, or None for the list) → (the _attrs entry it was read with,
        # value or errno). Valid only while that very entry is: every invalidation of the
        # attributes (setxattr, removexattr, chmod of an ACL, ...) drops the xattrs with them.
        self._xattrs: OrderedDict[tuple[str, str | None], tuple[Any, Any]] = OrderedDict()
        self.hits = {"getattr": 0, "readdir": 0, "read": 0, "xattr": 0}
        self.misses = {"getattr": 0, "readdir": 0, "read": 0, "xattr": 0}

    def close(self) -> None:
        if self.blocks is not None:
            self.blocks.close()

    # -- hits: answered instead of the backend ----------------------------------------------

    def _hand_over(self, req: Any, value: Any) -> None:
        self._answer.pending = (req, value)

    def _take_answer(self, req: Any) -> Any:
        # Tied to the request object: an answer left behind (a wrapper beneath ours raised)
        # is never given to another request.
        pending = getattr(self._answer, "pending", None)
        self._answer.pending = None
        if pending is None or pending[0] is not req:
            return None
        if isinstance(pending[1], _Failure):
            raise OSError(pending[1].code, os.strerror(pending[1].code))
        return pending[1]

    @hookimpl(tryfirst=True, specname="vfs_getattr")
    def answer_getattr(self, req: ops.GetattrRequest) -> Any:
        return self._take_answer(req)

    @hookimpl(tryfirst=True, specname="vfs_readdir")
    def answer_readdir(self, req: ops.ReaddirRequest) -> Any:
        return self._take_answer(req)

    @hookimpl(tryfirst=True, specname="vfs_read")
    def answer_read(self, req: ops.ReadRequest) -> Any:
        return self._take_answer(req)

    @hookimpl(tryfirst=True, specname="vfs_getxattr")
    def answer_getxattr(self, req: ops.GetxattrRequest) -> Any:
        return self._take_answer(req)

    @hookimpl(tryfirst=True, specname="vfs_listxattr")
    def answer_listxattr(self, req: ops.ListxattrRequest) -> Any:
        return self._take_answer(req)

    # -- attributes ------------------------------------------------------------------------

    @hookimpl(wrapper=True, trylast=True)
    def vfs_getattr(self, req: ops.GetattrRequest) -> Generator[None, Any, Any]:
        path = req.path
        if not path:
            return (yield)
        now = time.monotonic()
        with self._lock:
            found = self._attrs.get(path)
            if found is not None and found[1] >= now:
                self._attrs.move_to_end(path)
                self.hits["getattr"] += 1
                self._hand_over(req, found[0])
                return (yield)
            self.misses["getattr"] += 1
            epoch = self._epoch
        attr = yield
        with self._lock:
            if epoch == self._epoch:
                self._remember_attr(path, attr, now)
        return attr

    def _remember_attr(self, path: str, attr: Any, now: float) -> None:
        """Under the lock: cache ``attr`` as the attributes of ``path``."""
        self._attrs[path] = (attr, now + self.attr_ttl)
        self._attrs.move_to_end(path)
        self._map(path, attr.st_ino)
        if attr.st_nlink > 1 and not stat.S_ISDIR(attr.st_mode):
            self._linked.add(path)
        while len(self._attrs) > self.max_entries:
            self._attrs.popitem(last=False)  # the name's inode stays known: see _map

    def remember_made(self, path: str, attr: Any, expected_epoch: int) -> None:
        """Keep the attributes a create/mkdir/... answered, unless another invalidation
        than the operation's own happened meanwhile."""
        if not path or attr is None:
            return
        with self._lock:
            if self._epoch == expected_epoch:
                self._remember_attr(path, attr, time.monotonic())

    def _map(self, path: str, ino: int) -> None:
        old = self._inos.get(path)
        if old == ino:
            return
        if old is not None:
            self._unmap(path)
        elif len(self._inos) >= 4 * self.max_entries:
            # Names outlive their attributes (a write needs the inode of a name whose
            # attributes were evicted); past this bound, start over rather than guess.
            self._clear_all()
        self._inos[path] = ino
        self._names.setdefault(ino, set()).add(path)
        directory = parent_of(path)
        while directory not in self._parents:
            self._parents.add(directory)
            if directory == "/":
                break
            directory = parent_of(directory)

    def _unmap(self, path: str) -> None:
        ino = self._inos.pop(path, None)
        if ino is not None:
            names = self._names.get(ino)
            if names is not None:
                names.discard(path)
                if not names:
                    del self._names[ino]

    # -- extended attributes (`ls -l` asks for ACLs of every name) ----------------------------

    @hookimpl(wrapper=True, trylast=True)
    def vfs_getxattr(self, req: ops.GetxattrRequest) -> Generator[None, Any, Any]:
        return (yield from self._xattr(req, (req.path, req.name)))

    @hookimpl(wrapper=True, trylast=True)
    def vfs_listxattr(self, req: ops.ListxattrRequest) -> Generator[None, Any, Any]:
        return (yield from self._xattr(req, (req.path, None)))

    def _xattr(self, req: Any, key: tuple[str, str | None]) -> Generator[None, Any, Any]:
        path = key[0]
        if not path:
            return (yield)
        now = time.monotonic()
        with self._lock:
            attrs = self._attrs.get(path)
            if attrs is None or attrs[1] < now:
                return (yield)  # nothing to tie the answer to
            found = self._xattrs.get(key)
            if found is not None and found[0] is attrs:
                self._xattrs.move_to_end(key)
                self.hits["xattr"] += 1
                self._hand_over(req, found[1])
                return (yield)
            self.misses["xattr"] += 1
            epoch = self._epoch
        try:
            result = yield
        except OSError as exc:
            if exc.errno in (errno.ENODATA, errno.EOPNOTSUPP):
                self._remember_xattr(key, attrs, _Failure(exc.errno), epoch)
            raise
        self._remember_xattr(key, attrs, result, epoch)
        return result

    def _remember_xattr(
        self, key: tuple[str, str | None], attrs: Any, value: Any, epoch: int
    ) -> None:
        with self._lock:
            if epoch != self._epoch or self._attrs.get(key[0]) is not attrs:
                return
            self._xattrs[key] = (attrs, value)
            self._xattrs.move_to_end(key)
            while len(self._xattrs) > self.max_entries:
                self._xattrs.popitem(last=False)

    # -- directory listings ----------------------------------------------------------------

    @hookimpl(wrapper=True, trylast=True)
    def vfs_readdir(self, req: ops.ReaddirRequest) -> Generator[None, Any, Any]:
        path = req.path
        if not path:
            return (yield)
        now = time.monotonic()
        with self._lock:
            found = self._listings.get(path)
            if found is not None and found[1] >= now:
                self._listings.move_to_end(path)
                self.hits["readdir"] += 1
                self._hand_over(req, self._entries(path, found[0], now))
                return (yield)
            self.misses["readdir"] += 1
            epoch = self._epoch
        result = yield
        entries = result if isinstance(result, list) else list(result)
        with self._lock:
            if epoch == self._epoch:
                self._remember_listing(path, entries, now)
        return entries

    def _entries(self, directory: str, listing: Listing, now: float) -> list[ops.DirEntry]:
        """Under the lock: the cached names, with whatever fresh attributes are cached; the
        session asks getattr (through the cache) for the others."""
        entries = []
        for name, ino, mode in listing:
            found = self._attrs.get(child_of(directory, name))
            attr = found[0] if found is not None and found[1] >= now else None
            entries.append(ops.DirEntry(name, ino, mode, attr))
        return entries

    def _remember_listing(self, path: str, entries: list[ops.DirEntry], now: float) -> None:
        self._listings[path] = (
            tuple((entry.name, entry.ino, entry.mode) for entry in entries),
            now + self.dir_ttl,
        )
        self._listings.move_to_end(path)
        self._parents.add(path)
        while len(self._listings) > self.max_listings:
            self._listings.popitem(last=False)
        for entry in entries:
            if entry.attr is not None:
                self._remember_attr(child_of(path, entry.name), entry.attr, now)

    # -- file data -------------------------------------------------------------------------

    @hookimpl(wrapper=True, trylast=True)
    def vfs_read(self, req: ops.ReadRequest) -> Generator[None, Any, Any]:
        blocks = self.blocks
        if blocks is None or not req.path or req.size <= 0 or req.offset < 0:
            return (yield)
        now = time.monotonic()
        with self._lock:
            ino = self._inos.get(req.path)
            if ino is not None and not self._signature_holds(ino, req.path, now):
                self._drop_data(ino)
            if ino is not None and not self._handle_current(req.fh, ino):
                ino = None  # opened before the file last changed: see _handle_current
            sequential = ino is not None and self._next_offset.get(ino) == req.offset
            epoch = self._epoch
        if ino is None:  # not looked up through the cache (or forgotten): no key to use
            return (yield)
        offset, size = req.offset, req.size
        self._note_position(ino, offset + size)
        block = self.block_size
        first, last = offset // block, (offset + size - 1) // block
        cached = self._assemble(blocks, ino, first, last, now)
        if cached is not None:
            self.hits["read"] += 1
            start = offset - first * block
            self._hand_over(req, cached[start : start + size])
            return (yield)
        self.misses["read"] += 1
        # Fetch from the caller's offset to the end of its last block, plus readahead when
        # the reader goes through the file in order, into a buffer of ours. Starting where
        # the caller starts keeps the answer what the backend alone would have given, even
        # for a backend that answers less than asked; the blocks wholly inside are kept.
        ahead = -(-self.readahead // block) if sequential else 0
        fetch_size = (last + 1 + ahead) * block - offset
        saved = (req.size, req.buffers)
        req.size, req.buffers = fetch_size, ()
        try:
            raw = yield
        finally:
            req.size, req.buffers = saved
        if isinstance(raw, int):
            raise OSError(errno.EIO, "backend answered a read without buffers with a count")
        data = bytes(raw)
        self._fill(blocks, ino, req.path, offset, fetch_size, data, epoch, now)
        return data[:size]

    def _assemble(
        self, blocks: BlockCache, ino: int, first: int, last: int, now: float
    ) -> bytes | None:
        pieces = []
        for index in range(first, last + 1):
            piece = blocks.get(ino, index, now)
            if piece is None:
                return None
            pieces.append(piece)
            if len(piece) < self.block_size:
                break  # the end of the file
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def _fill(
        self,
        blocks: BlockCache,
        ino: int,
        path: str,
        offset: int,
        fetch_size: int,
        data: bytes,
        epoch: int,
        now: float,
    ) -> None:
        """Keep the blocks ``data`` (read at ``offset``) holds whole, and the last block when
        the data ends the file."""
        block = self.block_size
        end = offset + len(data)
        with self._lock:
            if epoch != self._epoch:
                return
            found = self._attrs.get(path)
            if found is not None:
                self._signatures[ino] = _signature(found[0])
            expires = now + self.data_ttl
            index = -(-offset // block)
            while (index + 1) * block <= end:
                start = index * block - offset
                blocks.put(ino, index, data[start : start + block], expires)
                index += 1
            at_end = len(data) < fetch_size and (found is None or end >= found[0].st_size)
            if at_end and index * block >= offset:
                # Short, and no known size says otherwise: the file ends in this block.
                blocks.put(ino, index, data[index * block - offset :], expires)

    def _signature_holds(self, ino: int, path: str, now: float) -> bool:
        """Under the lock: False when fresh attributes show the file changed since its blocks
        were read (a change made behind the cache's back)."""
        expected = self._signatures.get(ino)
        found = self._attrs.get(path)
        if expected is None or found is None or found[1] < now:
            return True
        return _signature(found[0]) == expected

    def _note_position(self, ino: int, end: int) -> None:
        with self._lock:
            self._next_offset[ino] = end
            self._next_offset.move_to_end(ino)
            if len(self._next_offset) > 4096:
                self._next_offset.popitem(last=False)

    # -- invalidation ----------------------------------------------------------------------

    def invalidate(self, op: str, req: Any, result: Any = None) -> None:
        """Forget what ``op`` on ``req`` (which answered ``result``, None if it failed) may
        have made stale."""
        with self._lock:
            if op in _CLOSING:
                self._closing(op, req)
                return
            self._epoch += 1
            if op == "write" or op == "fallocate":
                self._data_changed_through(req.fh, req.path)
            elif op == "copy_file_range":
                self._data_changed_through(req.fh_out, req.path_out)
            elif op == "open":
                if req.flags & os.O_TRUNC:
                    self._data_changed(req.path)
                if result is not None and writes_on_open(req.flags):
                    self._writers.add(id(result))
                self._note_open(result, req.path)
            elif op == "create":
                self._entries_changed(parent_of(req.path))
                if result is not None:  # an existing file opened with O_TRUNC, or a new one
                    self._inode_changed(result[1].st_ino)
                    if result[0] is not None:
                        self._writers.add(id(result[0]))
                    self._note_open(result[0], req.path, result[1].st_ino)
                elif req.path in self._inos:
                    self._data_changed(req.path)
            elif op == "setattr":
                if req.size is not None:
                    self._data_changed_through(req.fh, req.path)
                else:
                    self._meta_changed(req.path)
            elif op in ("symlink", "mknod", "mkdir"):
                self._entries_changed(parent_of(req.path))
            elif op == "link":
                self._meta_changed(req.old)
                self._entries_changed(parent_of(req.new))
            elif op == "unlink":
                self._removed(req.path)
            elif op == "rmdir":
                self._removed(req.path)
                self._forget_subtree(req.path)
            elif op == "rename":
                for path in (req.old, req.new):
                    self._meta_changed(path)
                    self._entries_changed(parent_of(path))
                self._removed(req.new)  # a replaced target loses a link
                for path in (req.old, req.new):
                    self._forget_subtree(path)
            elif op in ("setxattr", "removexattr"):
                self._meta_changed(req.path)

    # The helpers below run under the lock.

    def _closing(self, op: str, req: Any) -> None:
        """Write-back backends (object stores) upload at flush, release or fsync, which may
        change the attributes they report (mtime, version): forget them for files that were
        written. Handles of None cannot be told apart, so they always count as written."""
        fh = req.fh
        written = op == "fsync" or fh is None or id(fh) in self._writers
        if op == "release" and fh is not None:
            self._writers.discard(id(fh))
            self._opened.pop(id(fh), None)
        if written and req.path:
            self._epoch += 1
            self._meta_changed(req.path)

    def _meta_changed(self, path: str) -> None:
        if not path:
            return
        ino = self._inos.get(path)
        if ino is None:
            # Another name of the same inode may be cached, and we cannot tell which: drop
            # the attributes of every name of a multiply-linked file.
            self._attrs.pop(path, None)
            for name in self._linked:
                self._attrs.pop(name, None)
            self._linked.clear()
            return
        for name in tuple(self._names.get(ino, ())):
            self._attrs.pop(name, None)

    def _data_changed(self, path: str) -> None:
        if not path:
            return  # no name is left; only handles see this file, and they bypass the cache
        ino = self._inos.get(path)
        if ino is None:
            self._meta_changed(path)
            self._era += 1  # any open handle may be of this file
            self._data_gen.clear()
            if self.blocks is not None:
                self.blocks.clear()
            self._signatures.clear()
            return
        self._meta_changed(path)
        self._drop_data(ino)

    def _inode_changed(self, ino: int) -> None:
        for name in tuple(self._names.get(ino, ())):
            self._attrs.pop(name, None)
        self._drop_data(ino)

    def _data_changed_through(self, fh: Any, path: str) -> None:
        """A data change made through handle ``fh``: the handle sees its own change, so if
        it was current it stays current."""
        ino = self._inos.get(path)
        was_current = fh is not None and ino is not None and self._handle_current(fh, ino)
        self._data_changed(path)
        if was_current:
            self._note_open(fh, path, ino)

    def _handle_current(self, fh: Any, ino: int) -> bool:
        """Under the lock: whether a handle was opened after the last change to the data of
        ``ino``. A backend may keep serving an older handle the version it opened (object
        stores: close-to-open); such reads bypass the cache both ways, so that version is
        never shown to later opens, nor theirs to it."""
        opened = self._opened.get(id(fh)) if fh is not None else None
        if opened is None:
            return True
        return opened == (ino, self._data_gen.get(ino, 0), self._era)

    def _note_open(self, fh: Any, path: str, ino: int | None = None) -> None:
        if fh is None:
            return
        ino = self._inos.get(path) if ino is None else ino
        if ino is not None:
            self._opened[id(fh)] = (ino, self._data_gen.get(ino, 0), self._era)

    def _drop_data(self, ino: int) -> None:
        self._data_gen[ino] = self._data_gen.get(ino, 0) + 1
        if self.blocks is not None:
            self.blocks.drop_ino(ino)
        self._signatures.pop(ino, None)

    def _entries_changed(self, directory: str) -> None:
        self._listings.pop(directory, None)
        self._attrs.pop(directory, None)  # mtime, and nlink for subdirectories

    def _removed(self, path: str) -> None:
        """A name went away (or was replaced): its inode lost a link."""
        self._meta_changed(path)
        self._entries_changed(parent_of(path))
        ino = self._inos.get(path)
        if ino is not None:
            # The inode may be gone and its number reused by the backend.
            self._drop_data(ino)
        self._unmap(path)
        self._attrs.pop(path, None)
        self._listings.pop(path, None)

    def _clear_all(self) -> None:
        # Handles opened before now can no longer be compared: a new era makes them stale.
        self._era += 1
        self._data_gen.clear()
        self._attrs.clear()
        self._listings.clear()
        self._xattrs.clear()
        self._inos.clear()
        self._names.clear()
        self._parents.clear()
        self._linked.clear()
        self._signatures.clear()
        if self.blocks is not None:
            self.blocks.clear()

    def _forget_subtree(self, path: str) -> None:
        """``path`` and everything cached beneath it: the names no longer mean the same."""
        self._unmap(path)
        self._attrs.pop(path, None)
        self._listings.pop(path, None)
        if path not in self._parents:
            return
        prefix = path.rstrip("/") + "/"
        for table in (self._attrs, self._listings):
            for key in [key for key in table if key.startswith(prefix)]:
                del table[key]
        for key in [key for key in self._inos if key.startswith(prefix)]:
            self._unmap(key)
        self._parents = {key for key in self._parents if not key.startswith(prefix)}
        self._parents.discard(path)


class _Failure:
    """A cached errno (ENODATA: no such xattr), raised again on a hit."""

    __slots__ = ("code",)

    def __init__(self, code: int) -> None:
        self.code = code


def _signature(attr: Any) -> tuple[int, int]:
    return attr.st_mtime_ns, attr.st_size


# Where a write-back backend may upload what was written (see CacheMiddleware._closing).
_CLOSING = frozenset({"flush", "release", "fsync"})

# Operations that answer with the attributes of the name they made: kept, so the next
# write to a new file knows its inode (the kernel does not look a name up after making it).
_MAKES_NAME = {"create": "path", "mkdir": "path", "mknod": "path", "symlink": "path", "link": "new"}


def _invalidating_wrapper(op: str) -> Any:
    def wrapper(self: CacheMiddleware, req: Any) -> Generator[None, Any, Any]:
        with self._lock:
            epoch = self._epoch
        try:
            result = yield
        except BaseException:
            self.invalidate(op, req)
            raise
        self.invalidate(op, req, result)
        field = _MAKES_NAME.get(op)
        if field is not None:
            attr = result[1] if op == "create" else result
            self.remember_made(getattr(req, field), attr, epoch + 1)
        return result

    return wrapper


# The invalidating wrappers are innermost too: outside middleware listed after the cache,
# they would invalidate before those finished, and a fill could slip in between.
install_wrappers(
    CacheMiddleware, _invalidating_wrapper, sorted(MUTATING | {"open"} | _CLOSING), trylast=True
)
