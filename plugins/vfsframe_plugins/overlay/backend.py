"""OverlayBackend: lower layers merged under an upper layer, with Linux overlayfs semantics.

Every namespace operation runs under one lock: it resolves paths through the layers, may copy
an entry up, and changes the upper layer in several steps (create, remove whiteout, ...);
nobody may see the steps in between. File I/O goes straight to the layer's open handle.
See docs/backends/overlay.md for the per-operation semantics.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import stat
import threading
from collections.abc import Callable, Sequence
from typing import Any

from vfsframe import ops
from vfsframe.plugin import Backend

from . import whiteouts as wh
from .inodes import ROOT_INO, InodeNumbers
from .layers import INTERNAL, Layer, WatchedChain, as_attr

COPY_CHUNK = 1 << 20
DIR_CACHE_ENTRIES = 4096
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND
# Errors that mean "this layer cannot store that xattr": the copy-up goes on without it.
_XATTR_SKIP = (errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EPERM, errno.EACCES)


def _error(code: int, path: str = "") -> OSError:
    return OSError(code, os.strerror(code), path) if path else OSError(code, os.strerror(code))


class OverlayFile:
    """An open file: the layer it was opened in and that layer's handle (one tuple, replaced
    as a whole, so a reader never pairs one layer with another's handle), the overlay inode."""

    __slots__ = ("flags", "ino", "lock", "opened", "retired")

    def __init__(self, layer: Layer, fh: Any, ino: int, flags: int) -> None:
        self.opened: tuple[Layer, Any] = (layer, fh)
        self.ino = ino
        self.flags = flags
        self.lock = threading.Lock()
        # Handles this one moved away from: other threads may still be reading through
        # them, so they are released with this one.
        self.retired: list[tuple[Layer, Any]] = []

    @property
    def layer(self) -> Layer:
        return self.opened[0]

    @property
    def fh(self) -> Any:
        return self.opened[1]


class OverlayDir:
    """An open directory; the session snapshots its merged listing, so nothing is kept."""

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path


# A resolved path: the entries of every layer that contributes, topmost first. Only a
# merged directory has more than one.
Stack = list[tuple[Layer, Any]]


class OverlayBackend(Backend):
    """Lower chains (topmost first, never written) under an optional upper chain."""

    # Locks stay in the client kernel: a file's lower and upper copies are one inode there.
    posix_locks = False
    flock_locks = False

    def __init__(self, lower: Sequence[Any], upper: Any | None = None) -> None:
        if not lower:
            raise ValueError("an overlay needs at least one lower layer")
        # Directory path → its resolved stack, for the parents of every lookup. Only the
        # upper layer changes (lower layers must not change under a running overlay), and
        # every change to its names drops the whole cache.
        self._dirs: dict[str, Stack] = {}
        watched = WatchedChain(upper, self._dirs.clear) if upper is not None else None
        self.upper = Layer(0, watched, True) if watched is not None else None
        first = 1 if upper is not None else 0
        self.lowers = [Layer(first + i, chain, False) for i, chain in enumerate(lower)]
        self.layers = [self.upper, *self.lowers] if self.upper else list(self.lowers)
        self.inodes = InodeNumbers()
        self._lock = threading.RLock()
        # Overlay inodes that have an upper copy; read-only handles on their lower copy
        # switch to it at their next read.
        self._copied_up: set[int] = set()
        self._work_ready = False
        # Lower layer index → its hard-linked inodes' paths (see _aliases).
        self._hard_links: dict[int, dict[int, list[str]]] = {}
        # (lower layer index, its inode) → names of that hard link deleted through the overlay.
        self._gone_names: dict[tuple[int, int], int] = {}
        self._work_names = itertools.count()

    def start(self) -> None:
        for layer in self.layers:
            start = getattr(layer.chain, "start", None)
            if start is not None:
                start()

    def close(self) -> None:
        for layer in self.layers:
            close = getattr(layer.chain, "close", None)
            if close is not None:
                close()

    # -- resolution ------------------------------------------------------------------------

    def _opaque(self, layer: Layer, path: str) -> bool:
        if layer.stat(wh.join(path, wh.OPAQUE)) is not None:
            return True
        # A lower layer written by Linux overlayfs marks opaque directories with an xattr.
        return not layer.writable and layer.xattr(path, wh.OVERLAYFS_OPAQUE) == b"y"

    def _resolve(self, path: str) -> Stack:
        """The layers' entries for ``path``, topmost first; ENOENT / ENOTDIR as lookup gives."""
        if path in ("/", ""):
            stack: Stack = []
            for layer in self.layers:
                attr = layer.stat("/")
                if attr is not None:
                    stack.append((layer, attr))
                    if self._opaque(layer, "/"):
                        break
            return stack
        parent, name = wh.split(path)
        if wh.is_reserved(name):
            raise _error(errno.ENOENT, path)
        parents = self._dir_stack(parent)
        if not stat.S_ISDIR(parents[0][1].st_mode):
            raise _error(errno.ENOTDIR, path)
        stack = self._below(parents, path, name)
        if not stack:
            raise _error(errno.ENOENT, path)
        return stack

    def _dir_stack(self, path: str) -> Stack:
        """``_resolve`` for a parent directory, through the cache of directory stacks."""
        stack = self._dirs.get(path)
        if stack is None:
            stack = self._resolve(path)
            if stat.S_ISDIR(stack[0][1].st_mode):
                if len(self._dirs) >= DIR_CACHE_ENTRIES:
                    self._dirs.clear()
                self._dirs[path] = stack
        return stack

    def _below(self, parents: Stack, path: str, name: str) -> Stack:
        """Look ``name`` up in each layer of the parent's stack, top to bottom."""
        stack: Stack = []
        parent = wh.split(path)[0]
        for layer, _ in parents:
            attr = layer.stat(path)
            if attr is None:
                if layer.stat(wh.join(parent, wh.whiteout_of(name))) is not None:
                    break
                continue
            if not layer.writable and wh.is_device_whiteout(attr):  # overlayfs-made layers
                break
            is_dir = stat.S_ISDIR(attr.st_mode)
            if stack and not is_dir:
                break  # a non-directory under a directory ends the merge
            stack.append((layer, attr))
            if not is_dir or self._opaque(layer, path):
                break
        return stack

    def _lookup(self, path: str) -> Stack | None:
        try:
            return self._resolve(path)
        except (FileNotFoundError, NotADirectoryError):
            return None

    def _lower_has(self, path: str) -> bool:
        """Whether a lower layer shows an entry at ``path`` when the upper's is left out:
        then removing the upper entry needs a whiteout."""
        if path == "/":
            return True
        parent, name = wh.split(path)
        parents = [entry for entry in self._resolve(parent) if entry[0] is not self.upper]
        return bool(self._below(parents, path, name))

    def _ino(self, path: str, stack: Stack) -> int:
        if path in ("/", ""):
            return ROOT_INO
        layer, attr = stack[0]
        return self.inodes.number(layer.index, attr.st_ino)

    def _attr(self, path: str, stack: Stack) -> ops.Attr:
        return self._shown(stack[0][0], stack[0][1], self._ino(path, stack))

    def _shown(self, layer: Layer, attr: Any, ino: int) -> ops.Attr:
        """A layer's attributes as the overlay shows them: its inode number, and a lower
        hard link's count without the names deleted through the overlay."""
        shown = as_attr(attr, ino)
        if shown.st_nlink > 1 and not layer.writable and not stat.S_ISDIR(shown.st_mode):
            gone = self._gone_names.get((layer.index, attr.st_ino), 0)
            shown.st_nlink = max(1, shown.st_nlink - gone)
        return shown

    def _upper_layer(self) -> Layer:
        if self.upper is None:
            raise _error(errno.EROFS)
        return self.upper

    # -- upper layer helpers ---------------------------------------------------------------

    def _work_path(self) -> str:
        """A fresh name in the work directory, which is emptied of leftovers the first time."""
        upper = self._upper_layer()
        work = "/" + wh.WORK_DIR
        if not self._work_ready:
            if upper.stat(work) is None:
                upper.chain.mkdir(ops.MkdirRequest(INTERNAL, work, stat.S_IFDIR | 0o700))
            else:
                self._clear_dir(upper, work)
            self._work_ready = True
        return wh.join(work, f"{os.getpid()}.{next(self._work_names)}")

    def _clear_dir(self, layer: Layer, path: str) -> None:
        """Remove what a crashed copy-up or the overlay's markers left in an upper directory."""
        for entry in layer.entries(path):
            child = wh.join(path, entry.name)
            if stat.S_ISDIR(entry.mode):
                self._clear_dir(layer, child)
                layer.chain.rmdir(ops.RmdirRequest(INTERNAL, child))
            else:
                layer.chain.unlink(ops.UnlinkRequest(INTERNAL, child))

    def _make_whiteout(self, path: str) -> None:
        parent, name = wh.split(path)
        self._make_marker(wh.join(parent, wh.whiteout_of(name)))

    def _drop_whiteout(self, path: str) -> bool:
        """Remove the upper whiteout of ``path`` if there is one; say whether there was."""
        parent, name = wh.split(path)
        upper = self._upper_layer()
        whiteout = wh.join(parent, wh.whiteout_of(name))
        if upper.stat(whiteout) is None:
            return False
        upper.chain.unlink(ops.UnlinkRequest(INTERNAL, whiteout))
        return True

    def _make_opaque(self, path: str) -> None:
        self._make_marker(wh.join(path, wh.OPAQUE))

    def _make_marker(self, path: str) -> None:
        """An empty file: made with create, which every writable backend has (mknod not)."""
        upper = self._upper_layer()
        if upper.stat(path) is None:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
            fh, _ = upper.chain.create(ops.CreateRequest(INTERNAL, path, flags, 0o000))
            upper.chain.release(ops.ReleaseRequest(INTERNAL, path, fh, flags))

    def _upper_dir(self, path: str) -> None:
        """Make sure the upper layer has directory ``path``, copying parents up as needed."""
        upper = self._upper_layer()
        if upper.is_dir(path):
            return
        stack = self._resolve(path)
        if not stat.S_ISDIR(stack[0][1].st_mode):
            raise _error(errno.ENOTDIR, path)
        self._copy_up(path, stack)

    def _copy_up(self, path: str, stack: Stack | None = None, data: bool = True) -> Any:
        """Give ``path`` an upper copy (data, mode, owner, times, xattrs) unless it has one,
        built in the work directory and renamed into place; its overlay inode number stays.
        The other visible names of a lower file with several names are linked to the copy."""
        upper = self._upper_layer()
        stack = stack or self._resolve(path)
        layer, attr = stack[0]
        if layer is upper:
            return attr
        ino = self._ino(path, stack)
        self._upper_dir(wh.split(path)[0])
        work = self._work_path()
        try:
            self._copy_node(layer, path, attr, work, data)
            upper.chain.rename(ops.RenameRequest(INTERNAL, work, path))
        except BaseException:
            self._discard(work)
            raise
        if not stat.S_ISDIR(attr.st_mode) and attr.st_nlink > 1:
            self._link_up(layer, attr.st_ino, path)
        new = upper.stat(path)
        self.inodes.adopt(upper.index, new.st_ino, ino)
        self._copied_up.add(ino)
        return new

    def _link_up(self, layer: Layer, layer_ino: int, copied: str) -> None:
        """Link every other name that still shows lower inode ``layer_ino`` to its upper copy,
        so a hard link stays one inode (the kernel holds one node for all its names)."""
        upper = self._upper_layer()
        for alias in self._aliases(layer).get(layer_ino, ()):
            if alias == copied:
                continue
            stack = self._lookup(alias)
            if stack is None or stack[0][0] is not layer or stack[0][1].st_ino != layer_ino:
                continue  # whited out, shadowed, or another inode by now
            self._upper_dir(wh.split(alias)[0])
            upper.chain.link(ops.LinkRequest(INTERNAL, copied, alias))

    def _aliases(self, layer: Layer) -> dict[int, list[str]]:
        """The layer's inodes with several names: inode → paths. Found by walking the whole
        layer once, the first time one of its hard-linked files is copied up."""
        table = self._hard_links.get(layer.index)
        if table is None:
            names: dict[int, list[str]] = {}
            pending = ["/"]
            while pending:
                directory = pending.pop()
                for entry in layer.entries(directory):
                    if wh.is_reserved(entry.name):
                        continue
                    child = wh.join(directory, entry.name)
                    if stat.S_ISDIR(entry.mode):
                        pending.append(child)
                    else:
                        names.setdefault(entry.ino, []).append(child)
            table = {ino: paths for ino, paths in names.items() if len(paths) > 1}
            self._hard_links[layer.index] = table
        return table

    def _discard(self, work: str) -> None:
        upper = self._upper_layer()
        attr = upper.stat(work)
        if attr is None:
            return
        if stat.S_ISDIR(attr.st_mode):
            upper.chain.rmdir(ops.RmdirRequest(INTERNAL, work))
        else:
            upper.chain.unlink(ops.UnlinkRequest(INTERNAL, work))

    def _copy_node(self, layer: Layer, path: str, attr: Any, work: str, data: bool) -> None:
        upper = self._upper_layer()
        mode = attr.st_mode
        if stat.S_ISDIR(mode):
            upper.chain.mkdir(ops.MkdirRequest(INTERNAL, work, stat.S_IFDIR | 0o700))
        elif stat.S_ISLNK(mode):
            target = layer.chain.readlink(ops.ReadlinkRequest(INTERNAL, path))
            upper.chain.symlink(ops.SymlinkRequest(INTERNAL, work, target))
        elif stat.S_ISREG(mode):
            self._copy_data(layer, path, work, attr.st_size if data else 0)
        else:
            upper.chain.mknod(
                ops.MknodRequest(INTERNAL, work, stat.S_IFMT(mode) | 0o600, attr.st_rdev)
            )
        self._copy_xattrs(layer, path, work)
        upper.chain.setattr(ops.SetattrRequest(INTERNAL, work, uid=attr.st_uid, gid=attr.st_gid))
        if not stat.S_ISLNK(mode):
            upper.chain.setattr(ops.SetattrRequest(INTERNAL, work, mode=stat.S_IMODE(mode)))
        try:
            upper.chain.setattr(
                ops.SetattrRequest(
                    INTERNAL, work, atime_ns=attr.st_atime_ns, mtime_ns=attr.st_mtime_ns
                )
            )
        except OSError:
            if not stat.S_ISLNK(mode):  # some backends cannot time a symlink itself
                raise

    def _copy_data(self, layer: Layer, path: str, work: str, size: int) -> None:
        upper = self._upper_layer()
        out, _ = upper.chain.create(
            ops.CreateRequest(INTERNAL, work, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        )
        try:
            if size:
                source = layer.chain.open(ops.OpenRequest(INTERNAL, path, os.O_RDONLY))
                try:
                    self._copy_bytes(layer, path, source, upper, work, out, size)
                finally:
                    layer.chain.release(ops.ReleaseRequest(INTERNAL, path, source))
        finally:
            upper.chain.release(ops.ReleaseRequest(INTERNAL, work, out))

    def _copy_bytes(
        self, layer: Layer, path: str, source: Any, upper: Layer, work: str, out: Any, size: int
    ) -> None:
        buffer = bytearray(COPY_CHUNK)
        zeros = bytes(COPY_CHUNK)
        offset = 0
        while offset < size:
            chunk = self._read_into(layer.chain, path, source, offset, buffer)
            if not chunk:
                break
            # All-zero chunks are left as holes: sparse files stay sparse.
            if chunk != zeros[: len(chunk)]:
                self._write_all(upper.chain, work, out, offset, chunk)
            offset += len(chunk)
        upper.chain.setattr(ops.SetattrRequest(INTERNAL, work, fh=out, size=offset))

    @staticmethod
    def _read_into(chain: Any, path: str, fh: Any, offset: int, buffer: bytearray) -> memoryview:
        view = memoryview(buffer)
        got = chain.read(ops.ReadRequest(INTERNAL, path, fh, offset, len(buffer), [view]))
        if isinstance(got, int):
            return view[:got]
        return memoryview(got).cast("B")

    @staticmethod
    def _write_all(chain: Any, path: str, fh: Any, offset: int, data: memoryview) -> None:
        while len(data):
            done = chain.write(ops.WriteRequest(INTERNAL, path, fh, offset, [data], len(data)))
            if done <= 0:
                raise _error(errno.EIO, path)
            data = data[done:]
            offset += done

    def _copy_xattrs(self, layer: Layer, path: str, work: str) -> None:
        upper = self._upper_layer()
        try:
            names = layer.chain.listxattr(ops.ListxattrRequest(INTERNAL, path))
        except OSError as exc:
            if exc.errno in _XATTR_SKIP:
                return
            raise
        for name in names:
            try:
                value = layer.chain.getxattr(ops.GetxattrRequest(INTERNAL, path, name))
                upper.chain.setxattr(ops.SetxattrRequest(INTERNAL, work, name, bytes(value)))
            except OSError as exc:
                if exc.errno not in (*_XATTR_SKIP, errno.ENODATA):
                    raise

    # -- permission checks for changes the upper layer cannot check itself ---------------

    @staticmethod
    def _may(ctx: ops.Context, attr: Any, mask: int) -> bool:
        if ctx.uid == 0:
            return not mask & os.X_OK or bool(attr.st_mode & 0o111) or stat.S_ISDIR(attr.st_mode)
        if ctx.uid == attr.st_uid:
            bits = attr.st_mode >> 6
        elif ctx.gid == attr.st_gid:
            bits = attr.st_mode >> 3
        else:
            bits = attr.st_mode
        return bits & mask & 0o7 == mask

    def _check_remove(self, ctx: ops.Context, path: str, victim: Any) -> None:
        """Removing a lower entry is a whiteout the upper layer would not refuse: check the
        parent's write permission and sticky bit here."""
        parent = self._resolve(wh.split(path)[0])[0][1]
        if not self._may(ctx, parent, os.W_OK | os.X_OK):
            raise _error(errno.EACCES, path)
        sticky = parent.st_mode & stat.S_ISVTX
        if sticky and ctx.uid not in (0, parent.st_uid, victim.st_uid):
            raise _error(errno.EPERM, path)

    # -- attributes ------------------------------------------------------------------------

    def vfs_getattr(self, req: ops.GetattrRequest) -> ops.Attr:
        handle = req.fh
        if isinstance(handle, OverlayFile) and not req.path:  # unlinked: only the handle
            layer, fh = handle.opened
            attr = layer.chain.getattr(ops.GetattrRequest(req.ctx, "", fh))
            return as_attr(attr, handle.ino)
        with self._lock:
            return self._attr(req.path, self._resolve(req.path))

    def vfs_setattr(self, req: ops.SetattrRequest) -> ops.Attr:
        with self._lock:
            upper = self._upper_layer()
            handle = req.fh
            if not req.path and not isinstance(handle, OverlayFile):
                raise _error(errno.ENOENT)
            if req.path:
                stack = self._resolve(req.path)
                if stack[0][0] is not upper:
                    self._copy_up(req.path, stack, data=req.size != 0)
            fh = handle.fh if isinstance(handle, OverlayFile) and handle.layer is upper else None
            change = ops.SetattrRequest(
                req.ctx,
                req.path,
                fh,
                req.mode,
                req.uid,
                req.gid,
                req.size,
                req.atime_ns,
                req.mtime_ns,
                req.ctime_ns,
                req.kill_suid,
            )
            attr = upper.chain.setattr(change)
            if not req.path:  # an unlinked open file
                return as_attr(attr, handle.ino)
            # The number the copy-up kept (or a new one: a lower file with several names).
            return as_attr(attr, self._ino(req.path, [(upper, attr)]))

    def vfs_access(self, req: ops.AccessRequest) -> None:
        with self._lock:
            attr = self._resolve(req.path)[0][1]
        if req.mask & os.W_OK and self.upper is None:
            raise _error(errno.EROFS, req.path)
        if req.mask != os.F_OK and not self._may(req.ctx, attr, req.mask):
            raise _error(errno.EACCES, req.path)

    def vfs_readlink(self, req: ops.ReadlinkRequest) -> str:
        with self._lock:
            layer, _ = self._resolve(req.path)[0]
        return layer.chain.readlink(ops.ReadlinkRequest(req.ctx, req.path))

    def vfs_statfs(self, req: ops.StatfsRequest) -> ops.StatFs:
        layer = self.layers[0]
        return layer.chain.statfs(ops.StatfsRequest(req.ctx, "/"))

    # -- creating names --------------------------------------------------------------------

    def _create(self, path: str, make: Callable[[Layer], Any], is_dir: bool = False) -> Any:
        """Create ``path`` in the upper layer with ``make``; a whiteout it replaces goes, and
        a directory created over one is opaque (the lower one stays hidden)."""
        parent, name = wh.split(path)
        if wh.is_reserved(name):
            raise _error(errno.EINVAL, path)
        upper = self._upper_layer()
        if self._lookup(path) is not None:
            raise _error(errno.EEXIST, path)
        self._upper_dir(parent)
        result = make(upper)
        try:
            if is_dir and upper.stat(wh.join(parent, wh.whiteout_of(name))) is not None:
                self._make_opaque(path)
            self._drop_whiteout(path)
        except BaseException:
            self._remove_upper(path, is_dir)
            raise
        return result

    def _remove_upper(self, path: str, is_dir: bool, ctx: ops.Context = INTERNAL) -> None:
        upper = self._upper_layer()
        if is_dir:
            self._clear_dir(upper, path)
            upper.chain.rmdir(ops.RmdirRequest(ctx, path))
        else:
            upper.chain.unlink(ops.UnlinkRequest(ctx, path))

    def _entry_attr(self, path: str, attr: Any) -> ops.Attr:
        return as_attr(attr, self.inodes.number(self._upper_layer().index, attr.st_ino))

    def vfs_mkdir(self, req: ops.MkdirRequest) -> ops.Attr:
        with self._lock:
            attr = self._create(
                req.path,
                lambda upper: upper.chain.mkdir(ops.MkdirRequest(req.ctx, req.path, req.mode)),
                is_dir=True,
            )
            return self._entry_attr(req.path, attr)

    def vfs_mknod(self, req: ops.MknodRequest) -> ops.Attr:
        with self._lock:
            attr = self._create(
                req.path,
                lambda upper: upper.chain.mknod(
                    ops.MknodRequest(req.ctx, req.path, req.mode, req.rdev)
                ),
            )
            return self._entry_attr(req.path, attr)

    def vfs_symlink(self, req: ops.SymlinkRequest) -> ops.Attr:
        with self._lock:
            attr = self._create(
                req.path,
                lambda upper: upper.chain.symlink(
                    ops.SymlinkRequest(req.ctx, req.path, req.target)
                ),
            )
            return self._entry_attr(req.path, attr)

    def vfs_create(self, req: ops.CreateRequest) -> tuple[OverlayFile, ops.Attr]:
        with self._lock:
            stack = self._lookup(req.path)
            if stack is not None:
                if req.flags & os.O_EXCL:
                    raise _error(errno.EEXIST, req.path)
                handle = self._open(req.ctx, req.path, req.flags & ~os.O_CREAT, stack)
                return handle, self._attr(req.path, self._resolve(req.path))
            fh, attr = self._create(
                req.path,
                lambda upper: upper.chain.create(
                    ops.CreateRequest(req.ctx, req.path, req.flags, req.mode)
                ),
            )
            entry = self._entry_attr(req.path, attr)
            return OverlayFile(self._upper_layer(), fh, entry.st_ino, req.flags), entry

    def vfs_link(self, req: ops.LinkRequest) -> ops.Attr:
        with self._lock:
            stack = self._resolve(req.old)
            if stat.S_ISDIR(stack[0][1].st_mode):
                raise _error(errno.EPERM, req.old)
            self._upper_layer()
            if self._lookup(req.new) is not None:
                raise _error(errno.EEXIST, req.new)
            self._copy_up(req.old, stack)
            attr = self._create(
                req.new,
                lambda upper: upper.chain.link(ops.LinkRequest(req.ctx, req.old, req.new)),
            )
            upper_ino = self._upper_layer().stat(req.old).st_ino
            # The copy-up kept the overlay number unless the lower inode had several names.
            return as_attr(attr, self.inodes.number(self._upper_layer().index, upper_ino))

    # -- removing names --------------------------------------------------------------------

    def vfs_unlink(self, req: ops.UnlinkRequest) -> None:
        with self._lock:
            stack = self._resolve(req.path)
            layer, attr = stack[0]
            if stat.S_ISDIR(attr.st_mode):
                raise _error(errno.EISDIR, req.path)
            self._remove(req.ctx, req.path, layer, attr, is_dir=False)

    def vfs_rmdir(self, req: ops.RmdirRequest) -> None:
        with self._lock:
            if req.path in ("/", ""):
                raise _error(errno.EBUSY, req.path)
            stack = self._resolve(req.path)
            layer, attr = stack[0]
            if not stat.S_ISDIR(attr.st_mode):
                raise _error(errno.ENOTDIR, req.path)
            if self._merged(req.path, stack):
                raise _error(errno.ENOTEMPTY, req.path)
            self._remove(req.ctx, req.path, layer, attr, is_dir=True)

    def _remove(self, ctx: ops.Context, path: str, layer: Layer, attr: Any, is_dir: bool) -> None:
        upper = self._upper_layer()
        needs_whiteout = self._lower_has(path)
        if layer is not upper:
            self._check_remove(ctx, path, attr)
            self._upper_dir(wh.split(path)[0])
            self._make_whiteout(path)
            self._name_gone(layer, attr)
            return
        # Whiteout first: until the upper entry goes, it hides its own whiteout.
        if needs_whiteout:
            self._make_whiteout(path)
        try:
            if is_dir:
                self._clear_markers(path)
                upper.chain.rmdir(ops.RmdirRequest(ctx, path))
            else:
                upper.chain.unlink(ops.UnlinkRequest(ctx, path))
        except BaseException:
            if needs_whiteout:
                self._drop_whiteout(path)
            raise
        if is_dir or attr.st_nlink <= 1:
            self.inodes.forget(upper.index, attr.st_ino)

    def _name_gone(self, layer: Layer, attr: Any) -> None:
        """A name of a lower hard link was deleted or replaced: one name fewer to count."""
        if layer.writable or stat.S_ISDIR(attr.st_mode) or attr.st_nlink <= 1:
            return
        key = (layer.index, attr.st_ino)
        self._gone_names[key] = self._gone_names.get(key, 0) + 1

    def _clear_markers(self, path: str) -> None:
        """An empty merged directory may still hold whiteouts and an opaque marker."""
        upper = self._upper_layer()
        for entry in upper.entries(path):
            if wh.is_reserved(entry.name):
                upper.chain.unlink(ops.UnlinkRequest(INTERNAL, wh.join(path, entry.name)))

    # -- rename ----------------------------------------------------------------------------

    def vfs_rename(self, req: ops.RenameRequest) -> None:
        if req.flags & ~(ops.RENAME_NOREPLACE | ops.RENAME_EXCHANGE) or req.flags == (
            ops.RENAME_NOREPLACE | ops.RENAME_EXCHANGE
        ):
            raise _error(errno.EINVAL, req.old)
        for path in (req.old, req.new):
            if wh.is_reserved(wh.split(path)[1]):
                raise _error(errno.EINVAL if path == req.new else errno.ENOENT, path)
        with self._lock:
            upper = self._upper_layer()
            for path in (req.old, req.new):  # both parents first, as rename(2) looks them up
                if not stat.S_ISDIR(self._resolve(wh.split(path)[0])[0][1].st_mode):
                    raise _error(errno.ENOTDIR, path)
            source = self._resolve(req.old)
            target = self._lookup(req.new)
            if req.flags & ops.RENAME_NOREPLACE and target is not None:
                raise _error(errno.EEXIST, req.new)
            if req.flags & ops.RENAME_EXCHANGE and target is None:
                raise _error(errno.ENOENT, req.new)
            if req.new.startswith(req.old + "/"):
                raise _error(errno.EINVAL, req.new)  # into itself
            if req.old.startswith(req.new + "/") and not req.flags & ops.RENAME_EXCHANGE:
                raise _error(errno.ENOTEMPTY, req.new)  # onto its own ancestor
            if req.old == req.new:
                return
            self._movable(req.old, source)
            if target is not None:
                self._check_target(req.new, source, target, req.flags)
            if source[0][0] is not upper:
                self._check_remove(req.ctx, req.old, source[0][1])
            self._copy_up(req.old, source)
            if req.flags & ops.RENAME_EXCHANGE:
                self._copy_up(req.new, target)
            self._upper_dir(wh.split(req.new)[0])
            if target is not None and not req.flags & ops.RENAME_EXCHANGE:
                self._clear_target(req.new, target)
                self._name_gone(*target[0])
            old_needs_whiteout = not req.flags & ops.RENAME_EXCHANGE and self._lower_has(req.old)
            upper.chain.rename(
                ops.RenameRequest(req.ctx, req.old, req.new, req.flags & ops.RENAME_EXCHANGE)
            )
            self._drop_whiteout(req.new)
            if stat.S_ISDIR(source[0][1].st_mode) and self._lower_has(req.new):
                self._make_opaque(req.new)
            exchanged_dir = (
                target is not None
                and req.flags & ops.RENAME_EXCHANGE
                and stat.S_ISDIR(target[0][1].st_mode)
            )
            if exchanged_dir and self._lower_has(req.old):
                self._make_opaque(req.old)
            if old_needs_whiteout:
                self._make_whiteout(req.old)

    def _movable(self, path: str, stack: Stack) -> None:
        """Directories that reach into a lower layer are not renamed (EXDEV, as overlayfs
        without redirect_dir): `mv` then copies and deletes."""
        upper = self._upper_layer()
        layer, attr = stack[0]
        if stat.S_ISDIR(attr.st_mode) and (layer is not upper or len(stack) > 1):
            raise _error(errno.EXDEV, path)

    def _check_target(self, path: str, source: Stack, target: Stack, flags: int) -> None:
        source_dir = stat.S_ISDIR(source[0][1].st_mode)
        target_dir = stat.S_ISDIR(target[0][1].st_mode)
        if flags & ops.RENAME_EXCHANGE:
            self._movable(path, target)
            return
        if source_dir and not target_dir:
            raise _error(errno.ENOTDIR, path)
        if target_dir and not source_dir:
            raise _error(errno.EISDIR, path)
        if target_dir and self._merged(path, target):
            raise _error(errno.ENOTEMPTY, path)

    def _clear_target(self, path: str, target: Stack) -> None:
        """An empty directory being replaced may hold markers the upper rename would refuse."""
        upper = self._upper_layer()
        layer, attr = target[0]
        if layer is upper and stat.S_ISDIR(attr.st_mode):
            self._clear_markers(path)

    # -- files -----------------------------------------------------------------------------

    def _open(self, ctx: ops.Context, path: str, flags: int, stack: Stack) -> OverlayFile:
        layer, attr = stack[0]
        if stat.S_ISDIR(attr.st_mode) and flags & os.O_ACCMODE != os.O_RDONLY:
            raise _error(errno.EISDIR, path)
        if flags & _WRITE_FLAGS and layer is not self.upper:
            self._copy_up(path, stack, data=not flags & os.O_TRUNC)
            stack = self._resolve(path)
            layer = stack[0][0]
        ino = self._ino(path, stack)
        fh = layer.chain.open(ops.OpenRequest(ctx, path, flags))
        return OverlayFile(layer, fh, ino, flags)

    def vfs_open(self, req: ops.OpenRequest) -> OverlayFile:
        with self._lock:
            return self._open(req.ctx, req.path, req.flags, self._resolve(req.path))

    def _current(self, handle: OverlayFile, path: str) -> None:
        """A read-only handle on a lower file that was copied up since: move it to the
        upper copy, so that it reads what writers wrote (as overlayfs does since 4.19)."""
        if handle.layer is self.upper or handle.ino not in self._copied_up or not path:
            return
        with self._lock, handle.lock:
            if handle.layer is self.upper:
                return
            stack = self._lookup(path)
            if (
                stack is None
                or stack[0][0] is not self.upper
                or self._ino(path, stack) != handle.ino
            ):
                return
            fh = self.upper.chain.open(ops.OpenRequest(INTERNAL, path, handle.flags))
            handle.retired.append(handle.opened)
            handle.opened = (self.upper, fh)

    def vfs_read(self, req: ops.ReadRequest) -> Any:
        handle: OverlayFile = req.fh
        self._current(handle, req.path)
        return self._on_handle(req, lambda chain, r: chain.read(r))

    def vfs_write(self, req: ops.WriteRequest) -> int:
        if req.fh.layer is not self.upper:
            raise _error(errno.EBADF, req.path)
        return self._on_handle(req, lambda chain, r: chain.write(r))

    def _on_handle(self, req: Any, call: Callable[[Any, Any], Any]) -> Any:
        """``call`` with the layer's chain and ``req`` carrying the layer's handle."""
        handle: OverlayFile = req.fh
        layer, req.fh = handle.opened
        try:
            return call(layer.chain, req)
        finally:
            req.fh = handle

    def vfs_flush(self, req: ops.FlushRequest) -> None:
        return self._on_handle(req, lambda chain, r: chain.flush(r))

    def vfs_fsync(self, req: ops.FsyncRequest) -> None:
        return self._on_handle(req, lambda chain, r: chain.fsync(r))

    def vfs_release(self, req: ops.ReleaseRequest) -> None:
        handle: OverlayFile = req.fh
        for layer, fh in handle.retired:
            layer.chain.release(ops.ReleaseRequest(INTERNAL, req.path, fh, handle.flags))
        return self._on_handle(req, lambda chain, r: chain.release(r))

    def vfs_fallocate(self, req: ops.FallocateRequest) -> None:
        if req.fh.layer is not self.upper:
            raise _error(errno.EBADF, req.path)
        return self._on_handle(req, lambda chain, r: chain.fallocate(r))

    def vfs_lseek(self, req: ops.LseekRequest) -> int:
        return self._on_handle(req, lambda chain, r: chain.lseek(r))

    def vfs_copy_file_range(self, req: ops.CopyFileRangeRequest) -> int:
        if req.fh_out.layer is not self.upper:
            raise _error(errno.EBADF, req.path_out)
        self._current(req.fh_in, req.path_in)
        (source, fh_in), (target, fh_out) = req.fh_in.opened, req.fh_out.opened
        if source is target:
            inner = ops.CopyFileRangeRequest(
                req.ctx,
                req.path_in,
                fh_in,
                req.offset_in,
                req.path_out,
                fh_out,
                req.offset_out,
                req.length,
                req.flags,
            )
            return target.chain.copy_file_range(inner)
        # Across layers: read and write, one bounded chunk.
        buffer = bytearray(min(req.length, COPY_CHUNK))
        chunk = self._read_into(source.chain, req.path_in, fh_in, req.offset_in, buffer)
        if not chunk:
            return 0
        write = ops.WriteRequest(req.ctx, req.path_out, fh_out, req.offset_out, [chunk], len(chunk))
        return target.chain.write(write)

    # -- directories -----------------------------------------------------------------------

    def vfs_opendir(self, req: ops.OpendirRequest) -> OverlayDir:
        with self._lock:
            if not stat.S_ISDIR(self._resolve(req.path)[0][1].st_mode):
                raise _error(errno.ENOTDIR, req.path)
        return OverlayDir(req.path)

    def vfs_readdir(self, req: ops.ReaddirRequest) -> list[ops.DirEntry]:
        with self._lock:
            return self._merged(req.path, self._resolve(req.path))

    def vfs_releasedir(self, req: ops.ReleasedirRequest) -> None:
        return None

    def vfs_fsyncdir(self, req: ops.FsyncdirRequest) -> None:
        if self.upper is not None and self.upper.is_dir(req.path):
            try:
                self.upper.chain.fsyncdir(
                    ops.FsyncdirRequest(req.ctx, req.path, None, req.datasync)
                )
            except OSError as exc:
                if exc.errno != errno.ENOSYS:
                    raise

    def _merged(self, path: str, stack: Stack) -> list[ops.DirEntry]:
        """The merged listing: upper names first, then each lower's names not yet seen nor
        whited out above; the overlay's own ``.wh.`` names never show."""
        listing: list[ops.DirEntry] = []
        seen: set[str] = set()
        hidden: set[str] = set()
        for layer, _ in stack:
            whited: set[str] = set()
            for entry in layer.entries(path):
                name = entry.name
                if wh.is_reserved(name):
                    target = wh.hidden_name(name)
                    if target is not None:
                        whited.add(target)
                    continue
                if name in seen or name in hidden:
                    continue
                if stat.S_ISCHR(entry.mode) and not layer.writable:
                    attr = entry.attr or layer.stat(wh.join(path, name))
                    if attr is not None and wh.is_device_whiteout(attr):
                        whited.add(name)
                        continue
                seen.add(name)
                ino = self.inodes.number(layer.index, entry.ino)
                attr = entry.attr
                # A directory's attributes come from a lookup (it may be merged).
                if attr is not None and not stat.S_ISDIR(entry.mode):
                    attr = self._shown(layer, attr, ino)
                else:
                    attr = None
                listing.append(ops.DirEntry(name, ino, entry.mode, attr))
            hidden |= whited
        return listing

    # -- extended attributes ---------------------------------------------------------------

    def vfs_getxattr(self, req: ops.GetxattrRequest) -> bytes:
        with self._lock:
            layer, _ = self._resolve(req.path)[0]
        return layer.chain.getxattr(req)

    def vfs_listxattr(self, req: ops.ListxattrRequest) -> list[str]:
        with self._lock:
            layer, _ = self._resolve(req.path)[0]
        return layer.chain.listxattr(req)

    def vfs_setxattr(self, req: ops.SetxattrRequest) -> None:
        with self._lock:
            self._copy_up(req.path)
            return self._upper_layer().chain.setxattr(req)

    def vfs_removexattr(self, req: ops.RemovexattrRequest) -> None:
        with self._lock:
            stack = self._resolve(req.path)
            layer, _ = stack[0]
            if layer is not self.upper:
                # Nothing to copy up for an attribute that is not there.
                layer.chain.getxattr(ops.GetxattrRequest(INTERNAL, req.path, req.name))
            self._copy_up(req.path, stack)
            return self._upper_layer().chain.removexattr(req)

    # -- whole filesystem ------------------------------------------------------------------

    def vfs_syncfs(self, req: ops.SyncfsRequest) -> None:
        if self.upper is not None:
            try:
                self.upper.chain.syncfs(req)
            except OSError as exc:
                if exc.errno != errno.ENOSYS:
                    raise

    def vfs_destroy(self, req: ops.DestroyRequest) -> None:
        for layer in self.layers:
            with contextlib.suppress(OSError):  # a layer without DESTROY has nothing pending
                layer.chain.destroy(req)
