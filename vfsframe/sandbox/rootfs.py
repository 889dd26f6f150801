"""Building the sandbox's file system view: a minimal root (namespace mode) or an empty,
deleted one (chroot mode).

Namespace mode, in a fresh mount namespace: make every mount private (nothing propagates
back to the host), mount a tmpfs as the new root, bind into it only the planned paths
(read-only where planned), pivot_root into it and detach the old root. A fresh proc of the
new PID namespace is mounted read-only, made the working directory (/proc/self/fd, for the
backends' magic links, see ``vfsframe.procfd``) and detached again: the root holds no /proc.

Chroot mode, with no namespaces: everything the backends use is already open, so the
process chroots into a new empty directory and deletes it (nothing can be created there).
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from vfsframe import procfd

from . import libc
from .plan import PlannedMount

_ST_FLAGS_KEPT = {  # statvfs flags a read-only remount of a bind must keep (locked ones)
    os.ST_NOSUID: libc.MS_NOSUID,
    os.ST_NODEV: libc.MS_NODEV,
    os.ST_NOEXEC: libc.MS_NOEXEC,
    os.ST_NOATIME: libc.MS_NOATIME,
    os.ST_NODIRATIME: libc.MS_NODIRATIME,
    os.ST_RELATIME: libc.MS_RELATIME,
}


def open_sources(mounts: tuple[PlannedMount, ...]) -> dict[Path, int]:
    """O_PATH descriptors of the bind sources, opened while every path can be reached. A
    read-write directory a share declares but that does not exist yet (an object store's
    root, which its backend would create) is created first."""
    for m in mounts:
        if m.kind == "rw" and not m.path.exists():
            m.path.mkdir(mode=0o755, parents=True)
    return {m.path: os.open(m.path, os.O_PATH | os.O_CLOEXEC) for m in mounts if m.kind != "tmpfs"}


def close_sources(sources: dict[Path, int]) -> None:
    for fd in sources.values():
        os.close(fd)
    sources.clear()


def pivot_into_minimal_root(mounts: tuple[PlannedMount, ...], sources: dict[Path, int]) -> None:
    """In a new mount namespace (and as PID 1 of a new PID namespace): build the root from
    ``mounts`` (bound from the descriptors in ``sources``) and pivot into it."""
    libc.mount("none", "/", None, libc.MS_REC | libc.MS_PRIVATE)
    new_root = tempfile.mkdtemp(prefix="vfsframe-root-")
    try:
        libc.mount("vfsframe-root", new_root, "tmpfs", libc.MS_NOSUID | libc.MS_NODEV, "mode=0755")
        for planned in mounts:
            _mount_one(new_root, planned, sources.get(planned.path))
        _anchor_proc(new_root)
    except OSError:
        # Leave no empty directory behind in the host's /tmp.
        with contextlib.suppress(OSError):
            libc.umount2(new_root, libc.MNT_DETACH)
            os.rmdir(new_root)
        raise
    old_root = os.path.join(new_root, ".old-root")
    os.mkdir(old_root, 0o700)
    libc.pivot_root(new_root, old_root)
    # The directory the new root was mounted on is a plain directory again: remove it from
    # the host's /tmp while the old root can still be reached.
    os.rmdir("/.old-root" + new_root)
    libc.umount2("/.old-root", libc.MNT_DETACH)
    os.rmdir("/.old-root")
    libc.umount2("/proc", libc.MNT_DETACH)  # the working directory keeps it alive, unreachable
    os.rmdir("/proc")
    # The root itself read-only: the planned read-write binds stay writable.
    libc.mount("none", "/", None, libc.MS_REMOUNT | libc.MS_BIND | libc.MS_RDONLY
               | libc.MS_NOSUID | libc.MS_NODEV)  # fmt: skip


def _mount_one(new_root: str, planned: PlannedMount, source_fd: int | None) -> None:
    target = new_root + str(planned.path)
    if planned.kind == "tmpfs" or source_fd is None:
        os.makedirs(target, exist_ok=True)
        libc.mount("vfsframe-tmp", target, "tmpfs", libc.MS_NOSUID | libc.MS_NODEV, "mode=1777")
        return
    if not os.path.lexists(target):
        if stat.S_ISDIR(os.fstat(source_fd).st_mode):
            os.makedirs(target)
        else:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            Path(target).touch()
    source = f"/proc/self/fd/{source_fd}"  # mount(2) follows the magic link
    libc.mount(source, target, None, libc.MS_BIND | libc.MS_REC)
    if planned.kind == "ro":
        flags = libc.MS_REMOUNT | libc.MS_BIND | libc.MS_RDONLY | _locked_flags(source_fd)
        libc.mount("none", target, None, flags)


def _locked_flags(path: int) -> int:
    """The mount flags of ``path`` a remount must repeat (in a user namespace they are
    locked, and leaving one out fails with EPERM)."""
    found = os.statvfs(path).f_flag
    return sum(ms for st, ms in _ST_FLAGS_KEPT.items() if found & st)


def _anchor_proc(new_root: str) -> None:
    proc = os.path.join(new_root, "proc")
    os.makedirs(proc, 0o555, exist_ok=True)
    flags = libc.MS_RDONLY | libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC
    libc.mount("proc", proc, "proc", flags)
    procfd.anchor_in_working_directory(os.path.join(proc, "self", "fd"))


def chroot_into_empty_directory() -> None:
    """Chroot into a fresh directory and delete it; the backends work from the descriptors
    they opened before, and /proc/self/fd through the working directory."""
    procfd.anchor_in_working_directory()
    parent = tempfile.gettempdir()
    empty = tempfile.mkdtemp(prefix="vfsframe-chroot-", dir=parent)
    parent_fd = os.open(parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.chroot(empty)
        os.rmdir(os.path.basename(empty), dir_fd=parent_fd)
    finally:
        os.close(parent_fd)
