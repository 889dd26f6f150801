"""The fusepy transport: serve a share through libfuse's high-level, path-based API.

libfuse does the kernel protocol (and the mounting, through fusermount3 when not root);
``ChainOperations`` turns each of its path callbacks into a ``vfsframe.ops`` request for the
share chain. It is the portable path: a share works wherever libfuse and mfusepy (or the
older fusepy) do. What it cannot do compared with the /dev/fuse transport is listed in
docs/transports.md.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import errno
import importlib
import itertools
import logging
import os
import shutil
import stat
import subprocess
import threading
import time
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from vfsframe import ops
from vfsframe.chain import ShareChain
from vfsframe.transport.devfuse import MountError, MountOptions, _fuse_connection, check_mountpoint

log = logging.getLogger(__name__)

INSTALL_HINT = "the fusepy transport needs mfusepy (or fusepy): pip install 'vfsframe[fusepy]'"

# How libfuse's high-level API hands over utimensat's special times when times are in ns:
# tv_sec 0 and tv_nsec UTIME_NOW / UTIME_OMIT.
_UTIME_NOW_NS = (1 << 30) - 1
_UTIME_OMIT_NS = (1 << 30) - 2


def load_fusepy() -> ModuleType:
    """mfusepy if installed (maintained, libfuse 2 and 3), else fusepy's ``fuse`` module."""
    # mfusepy picks libfuse 2 before 3 when both are installed; prefer 3, whose mount helper
    # (fusermount3) is the one current distributions ship, unless the user chose a library.
    chosen = {"FUSE_LIBRARY_PATH", "FUSE_LIBRARY_NAME"} & os.environ.keys()
    want_fuse3 = not chosen and ctypes.util.find_library("fuse3") is not None
    if want_fuse3:
        os.environ["FUSE_LIBRARY_NAME"] = "fuse3"
    for name in ("mfusepy", "fuse"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        except OSError as exc:  # the bindings are there but libfuse is not
            raise MountError(f"{INSTALL_HINT} and libfuse ({exc})") from None
        if hasattr(module, "FUSE") and hasattr(module, "FuseOSError"):
            if want_fuse3 and getattr(module, "fuse_version_major", 3) == 2:
                log.warning(
                    "%s was imported before vfsframe could choose libfuse 3; serving with "
                    "libfuse 2 (no rename flags); set FUSE_LIBRARY_NAME to choose",
                    name,
                )
            return module
    raise MountError(INSTALL_HINT)


@dataclass(slots=True)
class _Open:
    """What an integer fh stands for: the backend's handle and the flags it was opened with
    (the path API passes only fh to write, and O_APPEND must reach the backend)."""

    handle: Any
    flags: int = 0


class HandleTable:
    """Backend handle objects (any object, None included) behind the integer fh values
    that libfuse stores. Each fh lives from open/create/opendir to release/releasedir."""

    def __init__(self) -> None:
        self._next = itertools.count(1)
        self._open: dict[int, _Open] = {}

    def add(self, handle: Any, flags: int = 0) -> int:
        fh = next(self._next)  # itertools.count is atomic under the GIL
        self._open[fh] = _Open(handle, flags)
        return fh

    def get(self, fh: int | None) -> _Open:
        entry = self._open.get(fh) if fh else None
        return entry if entry is not None else _Open(None)

    def pop(self, fh: int) -> _Open:
        return self._open.pop(fh, None) or _Open(None)

    def __len__(self) -> int:
        return len(self._open)


def attr_dict(attr: Any) -> dict[str, int]:
    """An ``ops.Attr`` or ``os.stat_result`` as the st_* dict fusepy fills struct stat from
    (times in ns: the operations set ``use_ns``)."""
    return {
        "st_ino": attr.st_ino,
        "st_mode": attr.st_mode,
        "st_nlink": attr.st_nlink,
        "st_uid": attr.st_uid,
        "st_gid": attr.st_gid,
        "st_rdev": attr.st_rdev,
        "st_size": attr.st_size,
        "st_blocks": attr.st_blocks,
        "st_blksize": attr.st_blksize,
        "st_atime": attr.st_atime_ns,
        "st_mtime": attr.st_mtime_ns,
        "st_ctime": attr.st_ctime_ns,
    }


def _utime(value: int) -> int | None:
    if value == _UTIME_NOW_NS:
        return ops.UTIME_NOW
    if value == _UTIME_OMIT_NS:
        return None
    return int(value)


class ChainOperations:
    """fusepy's ``Operations`` protocol over a share chain.

    Not a subclass of ``Operations``: fusepy registers only the callbacks an object has, so
    an operation left out here is answered by libfuse (ENOSYS) or the kernel (locks).
    """

    use_ns = True  # times as integer ns, as vfsframe.ops carries them

    def __init__(self, chain: ShareChain, fusepy: ModuleType) -> None:
        self.chain = chain
        self.handles = HandleTable()
        self._fusepy = fusepy
        self._libfuse = getattr(fusepy, "_libfuse", None)

    # -- plumbing --------------------------------------------------------------------------

    def _ctx(self) -> ops.Context:
        uid, gid, pid = self._fusepy.fuse_get_context()
        umask = 0o022
        if self._libfuse is not None:  # the umask field exists since libfuse 2.8
            with contextlib.suppress(AttributeError, ValueError):
                umask = self._libfuse.fuse_get_context().contents.umask
        return ops.Context(uid, gid, pid, umask)

    def _call(self, op: str, req: ops.Request) -> Any:
        """Run one request through the chain; every failure becomes an errno for libfuse."""
        try:
            return getattr(self.chain, op)(req)
        except OSError as exc:
            raise self._fusepy.FuseOSError(exc.errno or errno.EIO) from None
        except Exception:
            # As the /dev/fuse session does: a bug in a plugin is EIO, not a dead server.
            log.exception("%s failed", op)
            raise self._fusepy.FuseOSError(errno.EIO) from None

    # -- attributes ------------------------------------------------------------------------

    def getattr(self, path: str, fh: int | None = None) -> dict[str, int]:
        req = ops.GetattrRequest(self._ctx(), path, self.handles.get(fh).handle)
        return attr_dict(self._call("getattr", req))

    def _setattr(self, path: str, fh: int | None = None, **fields: Any) -> None:
        req = ops.SetattrRequest(self._ctx(), path, self.handles.get(fh).handle, **fields)
        self._call("setattr", req)

    def chmod(self, path: str, mode: int) -> None:
        self._setattr(path, mode=mode)

    def chown(self, path: str, uid: int, gid: int) -> None:
        # -1 (fusepy already undid the unsigned overflow) means "leave unchanged".
        self._setattr(path, uid=None if uid == -1 else uid, gid=None if gid == -1 else gid)

    def truncate(self, path: str, length: int, fh: int | None = None) -> None:
        self._setattr(path, fh, size=length)

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> None:
        if times is None:
            self._setattr(path, atime_ns=ops.UTIME_NOW, mtime_ns=ops.UTIME_NOW)
        else:
            self._setattr(path, atime_ns=_utime(times[0]), mtime_ns=_utime(times[1]))

    def access(self, path: str, amode: int) -> None:
        self._call("access", ops.AccessRequest(self._ctx(), path, amode))

    def statfs(self, path: str) -> dict[str, int]:
        fs = self._call("statfs", ops.StatfsRequest(self._ctx(), path))
        return {
            "f_bsize": fs.bsize,
            "f_frsize": fs.frsize,
            "f_blocks": fs.blocks,
            "f_bfree": fs.bfree,
            "f_bavail": fs.bavail,
            "f_files": fs.files,
            "f_ffree": fs.ffree,
            "f_favail": fs.ffree,
            "f_namemax": fs.namelen,
        }

    # -- names -----------------------------------------------------------------------------

    def readlink(self, path: str) -> str:
        return self._call("readlink", ops.ReadlinkRequest(self._ctx(), path))

    def mknod(self, path: str, mode: int, dev: int) -> None:
        self._call("mknod", ops.MknodRequest(self._ctx(), path, mode, dev))

    def mkdir(self, path: str, mode: int) -> None:
        self._call("mkdir", ops.MkdirRequest(self._ctx(), path, mode))

    def unlink(self, path: str) -> None:
        self._call("unlink", ops.UnlinkRequest(self._ctx(), path))

    def rmdir(self, path: str) -> None:
        self._call("rmdir", ops.RmdirRequest(self._ctx(), path))

    def symlink(self, path: str, target: str) -> None:
        # fusepy's order: the new link's path first, then what it points to.
        self._call("symlink", ops.SymlinkRequest(self._ctx(), path, target))

    def link(self, new: str, old: str) -> None:
        self._call("link", ops.LinkRequest(self._ctx(), old, new))

    def rename(self, old: str, new: str, flags: int = 0) -> None:
        self._call("rename", ops.RenameRequest(self._ctx(), old, new, flags))

    # -- files -----------------------------------------------------------------------------

    def open(self, path: str, flags: int) -> int:
        handle = self._call("open", ops.OpenRequest(self._ctx(), path, flags))
        return self.handles.add(handle, flags)

    def create(self, path: str, mode: int, flags: int = os.O_WRONLY | os.O_CREAT) -> int:
        handle, _ = self._call("create", ops.CreateRequest(self._ctx(), path, flags, mode))
        return self.handles.add(handle, flags)

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        buffer = bytearray(size)
        req = ops.ReadRequest(
            self._ctx(), path, self.handles.get(fh).handle, offset, size, [memoryview(buffer)]
        )
        result = self._call("read", req)
        if isinstance(result, int):  # the backend filled our buffer
            return bytes(buffer[:result])
        return bytes(result)

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        entry = self.handles.get(fh)
        req = ops.WriteRequest(
            self._ctx(), path, entry.handle, offset, [memoryview(data)], len(data), entry.flags
        )
        return self._call("write", req)

    def flush(self, path: str, fh: int) -> None:
        self._call("flush", ops.FlushRequest(self._ctx(), path, self.handles.get(fh).handle))

    def release(self, path: str, fh: int) -> None:
        entry = self.handles.pop(fh)
        self._call("release", ops.ReleaseRequest(self._ctx(), path, entry.handle, entry.flags))

    def fsync(self, path: str, datasync: int, fh: int) -> None:
        req = ops.FsyncRequest(self._ctx(), path, self.handles.get(fh).handle, bool(datasync))
        self._call("fsync", req)

    def fallocate(self, path: str, mode: int, offset: int, size: int, fh: int) -> None:
        req = ops.FallocateRequest(
            self._ctx(), path, self.handles.get(fh).handle, mode, offset, size
        )
        self._call("fallocate", req)

    # -- directories -----------------------------------------------------------------------

    def opendir(self, path: str) -> int:
        return self.handles.add(self._call("opendir", ops.OpendirRequest(self._ctx(), path)))

    def readdir(self, path: str, fh: int) -> list[tuple[str, dict[str, int], int]]:
        # The whole listing at once (offset 0 for every entry): libfuse then buffers it per
        # open directory, so a listing stays consistent while entries are removed.
        req = ops.ReaddirRequest(self._ctx(), path, self.handles.get(fh).handle)
        # "." and ".." need real inode numbers: readdir(3) skips entries whose d_ino is 0.
        parent = path.rsplit("/", 1)[0] or "/"
        entries = [
            (name, {"st_mode": stat.S_IFDIR, "st_ino": self._ino(p)}, 0)
            for name, p in ((".", path), ("..", parent))
        ]
        for entry in self._call("readdir", req):
            entries.append(
                (entry.name, {"st_mode": stat.S_IFMT(entry.mode), "st_ino": entry.ino}, 0)
            )
        return entries

    def _ino(self, path: str) -> int:
        try:
            return self.chain.getattr(ops.GetattrRequest(self._ctx(), path)).st_ino
        except OSError:
            return 1  # any non-zero number keeps the name listed

    def releasedir(self, path: str, fh: int) -> None:
        req = ops.ReleasedirRequest(self._ctx(), path, self.handles.pop(fh).handle)
        self._call("releasedir", req)

    def fsyncdir(self, path: str, datasync: int, fh: int) -> None:
        req = ops.FsyncdirRequest(self._ctx(), path, self.handles.get(fh).handle, bool(datasync))
        self._call("fsyncdir", req)

    # -- extended attributes ---------------------------------------------------------------

    def setxattr(self, path: str, name: str, value: bytes, options: int, *_position: int) -> None:
        self._call("setxattr", ops.SetxattrRequest(self._ctx(), path, name, value, options))

    def getxattr(self, path: str, name: str, *_position: int) -> bytes:
        return bytes(self._call("getxattr", ops.GetxattrRequest(self._ctx(), path, name)))

    def listxattr(self, path: str) -> list[str]:
        return list(self._call("listxattr", ops.ListxattrRequest(self._ctx(), path)))

    def removexattr(self, path: str, name: str) -> None:
        self._call("removexattr", ops.RemovexattrRequest(self._ctx(), path, name))

    # -- lifetime --------------------------------------------------------------------------

    def destroy(self, path: str) -> None:
        self._call("destroy", ops.DestroyRequest(self._ctx()))


class _LegacyOperations(ChainOperations):
    """The original fusepy dispatches every callback through ``operations(name, *args)``."""

    def __call__(self, op: str, *args: Any) -> Any:
        method = getattr(self, op, None)
        if method is None:
            raise self._fusepy.FuseOSError(errno.ENOSYS)
        return method(*args)


def _fuse_class(fusepy: ModuleType) -> type:
    """mfusepy's FUSE drops renameat2's flags on libfuse 3; pass them on, so that
    RENAME_NOREPLACE and RENAME_EXCHANGE are not silently plain renames."""
    base = fusepy.FUSE
    if not hasattr(base, "rename_fuse_3"):
        return base

    class FlagsFUSE(base):  # type: ignore[misc, valid-type]
        def rename_fuse_3(self, old: bytes, new: bytes, flags: int) -> int:
            decode = (self.encoding, self.errors)
            return self.operations.rename(old.decode(*decode), new.decode(*decode), flags)

    return FlagsFUSE


# The share's cache policy (as vfsframe.session.CACHE_POLICIES defines it) in libfuse's words.
_CACHE_OPTIONS: dict[str, dict[str, Any]] = {
    "none": {"entry_timeout": 0, "attr_timeout": 0, "negative_timeout": 0, "direct_io": True},
    "auto": {"entry_timeout": 1, "attr_timeout": 1, "auto_cache": True},
    "always": {"entry_timeout": 86400, "attr_timeout": 86400, "kernel_cache": True},
}


class FusepyMount:
    """One libfuse mount of one share chain; the same life cycle as ``DevFuseMount``:
    ``mount()``, ``start()``, ``wait()``, ``unmount()``.

    libfuse's loop runs on a thread of its own (it blocks until the unmount), so the main
    thread stays free for signals and ``--run``.
    """

    def __init__(
        self, chain: ShareChain, mountpoint: str, options: MountOptions, cache: str = "auto"
    ) -> None:
        self.chain = chain
        self.cache = cache
        self.mountpoint = os.path.abspath(mountpoint)
        self.options = options
        self._fusepy = load_fusepy()
        legacy = self._fusepy.__name__ == "fuse"
        self.operations = (_LegacyOperations if legacy else ChainOperations)(chain, self._fusepy)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.connection: int | None = None

    def _fuse_kwargs(self) -> dict[str, Any]:
        opts = self.options
        kwargs: dict[str, Any] = {
            "foreground": True,
            "nothreads": False,
            "use_ino": True,  # st_ino from getattr, not libfuse's own node numbers
            "debug": opts.debug,
            "allow_other": opts.allow_other,
            "default_permissions": opts.default_permissions,
            "ro": opts.ro,
            "fsname": opts.fsname,
            "subtype": opts.subtype,
        }
        kwargs.update(_CACHE_OPTIONS[self.cache])
        if getattr(self._fusepy, "fuse_version_major", 2) == 2:
            kwargs["big_writes"] = True  # libfuse 2 writes 4 KiB at a time otherwise
        for item in opts.extra:
            key, _, value = item.partition("=")
            kwargs[key] = value
        return kwargs

    def mount(self) -> None:
        check_mountpoint(self.mountpoint)
        self._thread = threading.Thread(target=self._serve, name="fusepy-loop", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while self._thread.is_alive() and time.monotonic() < deadline:
            self.connection = _fuse_connection(self.mountpoint)
            if self.connection is not None:
                log.info("mounted %s on %s (fusepy)", self.options.fsname, self.mountpoint)
                return
            time.sleep(0.02)
        if self._thread.is_alive():
            self.unmount()
            raise MountError(f"libfuse did not mount {self.mountpoint} within 10 s")
        if isinstance(self._error, RuntimeError):  # fusepy's "fuse_main failed": libfuse
            reason = "see libfuse's message above"  # has printed the reason to stderr
        else:
            reason = str(self._error or "failed")
        raise MountError(f"libfuse could not mount {self.mountpoint}: {reason}")

    def _serve(self) -> None:
        try:
            _fuse_class(self._fusepy)(self.operations, self.mountpoint, **self._fuse_kwargs())
        except BaseException as exc:  # reported by mount() or logged; the thread just ends
            self._error = exc
            if self.connection is not None:
                log.error("libfuse loop ended: %s", exc)

    def start(self) -> None:
        """libfuse serves from the moment it mounted; nothing more to start."""

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the mount to end (unmounted from outside); True once it has."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def unmount(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            return
        helper = shutil.which("fusermount3") or shutil.which("fusermount")
        command = [helper, "-u", "-z", self.mountpoint] if helper else ["umount", "-l"]
        if not helper:
            command.append(self.mountpoint)
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            log.warning("unmounting %s: %s", self.mountpoint, done.stderr.strip())
        if not self.wait(5.0):
            self._abort_connection()
            self.wait(2.0)

    def _abort_connection(self) -> None:
        if self.connection is None:
            return
        try:
            with open(f"/sys/fs/fuse/connections/{self.connection}/abort", "w") as abort:
                abort.write("1")
        except OSError as exc:
            log.warning("could not abort FUSE connection %s: %s", self.connection, exc)
