"""Carrying out a sandbox plan in `vfsframe serve`, in two steps around building the shares:

1. ``SandboxEntry.prepare`` (config validated, plugins imported, nothing built, one thread):
   for namespace mode, enter the user namespace (with maps), fork into a new PID namespace
   and give the child its own mount, IPC and UTS namespaces; the parent supervises.
2. ``SandboxEntry.enter`` (backends built, sockets listening, serving threads not started):
   leave the network, switch root, drop capabilities, set no_new_privs, load the filter.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import stat
from collections.abc import Iterable
from pathlib import Path

from . import capabilities, libc, rootfs, seccomp, supervisor
from .idmap import become_namespace_root, enter_user_namespace
from .plan import SandboxPlan

log = logging.getLogger("vfsframe.sandbox")

# Modules the server imports lazily while serving; imported before the root goes away so
# that the sandbox need not hold what they would open. (The root keeps the interpreter's
# directories read-only as well; chroot mode has nothing.)
LAZY_MODULES = (
    "encodings.idna", "encodings.utf_8", "encodings.latin_1", "encodings.ascii",
    "logging.handlers", "concurrent.futures.thread", "json", "json.decoder", "json.encoder",
    "traceback", "linecache", "tokenize", "queue", "selectors", "select", "mmap", "fcntl",
    "errno", "stat", "struct", "uuid", "random", "hashlib", "contextlib",
)  # fmt: skip


class SandboxEntry:
    """Enters one plan: ``prepare`` before the shares are built, ``enter`` after."""

    def __init__(self, plan: SandboxPlan) -> None:
        self.plan = plan
        self._sources: dict[Path, int] = {}
        # chroot mode: (directory fd, name) of each socket, to remove it on the way out.
        self._socket_dirs: list[tuple[int, str]] = []
        self._watcher: seccomp.KernelLogWatcher | None = None

    def prepare(self, stop_signals: set[signal.Signals], sockets: Iterable[Path]) -> int | None:
        """Before building: returns None in the process that goes on to serve, or the exit
        status the supervising parent should exit with."""
        plan = self.plan
        # Opened while privileged (dmesg_restrict: CAP_SYSLOG of the host), read later.
        self._watcher = _log_watcher(plan)
        if plan.mode == "chroot":
            self._socket_dirs = [_parent_of(path) for path in sockets]
        if plan.mode != "namespace":
            return None
        for name in LAZY_MODULES:  # while every directory can still be read
            importlib.import_module(name)
        mapped = bool(plan.uid_map or plan.gid_map)
        if mapped:
            enter_user_namespace(plan.uid_map, plan.gid_map)
        child = supervisor.fork_into_pid_namespace()
        if child != 0:
            return supervisor.supervise(child, stop_signals, sockets)
        libc.unshare(libc.CLONE_NEWNS | libc.CLONE_NEWIPC | libc.CLONE_NEWUTS)
        # Opened in this mount namespace (bind sources must be in it) and before becoming the
        # mapped user, who may not reach them by name (e.g. an interpreter under /root).
        self._sources = rootfs.open_sources(plan.mounts)
        if mapped:
            become_namespace_root(plan.uid_map, plan.gid_map)
        return None

    def leave(self) -> None:
        """After serving: remove the sockets a chrooted server can no longer name."""
        for dir_fd, name in self._socket_dirs:
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISSOCK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                    os.unlink(name, dir_fd=dir_fd)
            os.close(dir_fd)
        self._socket_dirs = []

    def enter(self) -> None:
        """After building, before the serving threads start: isolate, drop, filter."""
        capabilities.refuse_other_threads()
        plan = self.plan
        watcher = self._watcher
        if watcher is not None:
            # The pid the kernel's audit lines carry: this process's pid in the host's PID
            # namespace, which the host /proc (still mounted here) tells.
            watcher.pid = int(os.readlink("/proc/self"))
        if plan.seccomp != "none":
            seccomp.load_library()  # found through ldconfig and the file system: do it now
        for name in LAZY_MODULES:
            importlib.import_module(name)
        if plan.mode == "namespace":
            if "net" in plan.namespaces:
                libc.unshare(libc.CLONE_NEWNET)
            rootfs.pivot_into_minimal_root(plan.mounts, self._sources)
            rootfs.close_sources(self._sources)
        elif plan.mode == "chroot":
            rootfs.chroot_into_empty_directory()
        capabilities.drop_all_but(plan.capabilities)
        capabilities.set_no_new_privs()
        if plan.seccomp != "none":
            count = seccomp.install_filter(plan.syscalls, plan.seccomp)
            log.info("seccomp %s: %d system calls allowed", plan.seccomp, count)
        if watcher is not None:
            watcher.start()
        log.info(
            "sandbox %s entered; capabilities kept: %s",
            plan.mode,
            ", ".join(plan.capabilities) or "none",
        )


def _log_watcher(plan: SandboxPlan) -> seccomp.KernelLogWatcher | None:
    if plan.seccomp != "log":
        return None
    try:
        return seccomp.KernelLogWatcher()
    except OSError as exc:
        log.warning("seccomp log: cannot read the kernel log (%s); calls are logged there", exc)
        return None


def _parent_of(path: Path) -> tuple[int, str]:
    return os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC), path.name
