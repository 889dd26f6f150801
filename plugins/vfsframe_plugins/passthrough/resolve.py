"""Sandboxed name resolution: every guest path is resolved from a descriptor of the share's
root, one component at a time in the kernel, never by joining the host root and the guest
path into one string.

``openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`` does the walk: no
component may be a symlink (the guest kernel resolves symlinks itself, so a symlink in the
middle of a path the session sends means the tree changed under us), nothing may resolve
above the root, /proc magic links are refused. Kernels without openat2 get the same walk in
Python: one ``openat(O_PATH | O_NOFOLLOW | O_DIRECTORY)`` per component from the root fd.
Operations on a final name are then ``*at()`` calls on (parent fd, name) with
AT_SYMLINK_NOFOLLOW, so a symlink planted in the share is never followed.
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

from . import syscalls

NAME_MAX = 255
# openat2 takes at most PATH_MAX bytes with the NUL; longer guest paths (legal: a process can
# work deep below a directory) are resolved in chunks of at most this many bytes.
CHUNK_MAX = 4000
_PATH_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW
# os.fsencode's encoding, without its call per path.
_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()


def _error(code: int, path: str | bytes) -> OSError:
    return OSError(code, os.strerror(code), os.fsdecode(path))


def components(path: str) -> list[bytes]:
    """The names of a share path ("/a/b" → [b"a", b"b"]), each checked: "." and ".." are
    refused rather than resolved, so no path can climb, whatever it says."""
    if not path:
        # The session's path of an open file that lost its last name: only its handle can
        # reach it, and "" must never mean the root.
        raise _error(errno.ENOENT, path)
    names = [name for name in path.encode(_FS_ENCODING, _FS_ERRORS).split(b"/") if name]
    for name in names:
        if name in (b".", b"..") or b"\0" in name:
            raise _error(errno.EINVAL, path)
        if len(name) > NAME_MAX:
            raise _error(errno.ENAMETOOLONG, path)
    return names


class Sandbox:
    """Opens names below one root directory and nowhere else."""

    def __init__(self, root: Path, submounts: bool = True) -> None:
        self.root = root
        try:
            self.root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except PermissionError:  # an unreadable root can still be walked and served
            self.root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        self.root_dev = os.fstat(self.root_fd).st_dev
        self.submounts = submounts
        self.resolve = (
            syscalls.RESOLVE_BENEATH | syscalls.RESOLVE_NO_SYMLINKS | syscalls.RESOLVE_NO_MAGICLINKS
        )
        if not submounts:
            self.resolve |= syscalls.RESOLVE_NO_XDEV
        self.has_openat2 = self._probe_openat2()

    def _probe_openat2(self) -> bool:
        try:
            os.close(syscalls.openat2(self.root_fd, b".", _PATH_FLAGS, 0, self.resolve))
        except OSError as exc:
            if exc.errno in (errno.ENOSYS, errno.EPERM):  # EPERM: a seccomp filter
                return False
            raise
        return True

    def close(self) -> None:
        if self.root_fd >= 0:
            os.close(self.root_fd)
            self.root_fd = -1

    # -- walking ---------------------------------------------------------------------------

    def open(self, names: list[bytes], flags: int, mode: int = 0) -> int:
        """A new descriptor of the object ``names`` leads to, opened with ``flags`` (plus
        O_NOFOLLOW and O_CLOEXEC). An empty list opens the root itself."""
        flags |= os.O_NOFOLLOW | os.O_CLOEXEC
        if not names:
            return self._open_at(self.root_fd, [b"."], flags, mode)
        if len(names) * (NAME_MAX + 1) <= CHUNK_MAX:  # short enough for one call, surely
            return self._open_at(self.root_fd, names, flags, mode)
        dirfd, owned = self.root_fd, False
        try:
            start = 0
            # Walk long paths a chunk at a time so that each openat2 stays under PATH_MAX.
            while True:
                end, length = start, 0
                while end < len(names) and length + len(names[end]) + 1 <= CHUNK_MAX:
                    length += len(names[end]) + 1
                    end += 1
                if end == len(names):
                    return self._open_at(dirfd, names[start:], flags, mode)
                end = max(end, start + 1)
                next_fd = self._open_at(dirfd, names[start:end], _PATH_FLAGS, 0)
                if owned:
                    os.close(dirfd)
                dirfd, owned, start = next_fd, True, end
        finally:
            if owned:
                os.close(dirfd)

    def _open_at(self, dirfd: int, names: list[bytes], flags: int, mode: int) -> int:
        if self.has_openat2:
            return syscalls.openat2(dirfd, b"/".join(names), flags, mode, self.resolve)
        return self._walk(dirfd, names, flags, mode)

    def _walk(self, dirfd: int, names: list[bytes], flags: int, mode: int) -> int:
        """The openat2 walk without openat2: O_NOFOLLOW on every component."""
        fd = dirfd
        try:
            for name in names[:-1]:
                next_fd = os.open(name, _PATH_FLAGS, dir_fd=fd)
                if fd != dirfd:
                    os.close(fd)
                fd = next_fd
                self._check_device(fd, name)
            result = os.open(names[-1], flags, mode, dir_fd=fd)
            if names[-1] != b".":
                self._check_device(result, names[-1], close=True)
            return result
        finally:
            if fd != dirfd:
                os.close(fd)

    def _check_device(self, fd: int, name: bytes, close: bool = False) -> None:
        if not self.submounts and os.fstat(fd).st_dev != self.root_dev:
            if close:
                os.close(fd)
            raise _error(errno.EXDEV, name)

    def open_parent(self, names: list[bytes]) -> int:
        """A descriptor of the directory holding the last of ``names``: the root's own fd for
        a name in the root (do not close that one), else a new O_PATH descriptor."""
        if len(names) == 1:
            return self.root_fd
        return self.open(names[:-1], os.O_PATH | os.O_DIRECTORY)

    def parent(self, path: str, root_errno: int = errno.EBUSY) -> ParentDirectory:
        """``with sandbox.parent(path) as (dirfd, name)``: the parent directory's descriptor
        and the final name of ``path``, for the ``*at()`` calls."""
        return ParentDirectory(self, path, root_errno)

    def check_name_device(self, dirfd: int, name: bytes, st: os.stat_result) -> None:
        """EXDEV for a mount point below the root when submounts are not served."""
        if not self.submounts and st.st_dev != self.root_dev:
            raise _error(errno.EXDEV, name)


# The context managers of the request path are classes, not @contextlib.contextmanager: with
# the CPU caches cold, as a guest leaves them between two requests, the generator machinery
# cost about 14 µs per use against 4 µs for a class, and a create used two.


class ParentDirectory:
    """What ``Sandbox.parent`` returns: entered, (directory descriptor, final name); the
    descriptor is closed on exit unless it is the root's own."""

    __slots__ = ("_dirfd", "_path", "_root_errno", "_sandbox")

    def __init__(self, sandbox: Sandbox, path: str, root_errno: int) -> None:
        self._sandbox = sandbox
        self._path = path
        self._root_errno = root_errno
        self._dirfd = -1

    def __enter__(self) -> tuple[int, bytes]:
        names = components(self._path)
        if not names:
            raise _error(self._root_errno, self._path)  # the operation names the root itself
        self._dirfd = self._sandbox.open_parent(names)
        return self._dirfd, names[-1]

    def __exit__(self, *exc_info: object) -> None:
        if self._dirfd != self._sandbox.root_fd:
            os.close(self._dirfd)


class Closing:
    """``with Closing(fd) as fd``: the descriptor is closed on exit."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __enter__(self) -> int:
        return self.fd

    def __exit__(self, *exc_info: object) -> None:
        os.close(self.fd)
