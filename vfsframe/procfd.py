"""Paths that reach an open file descriptor's file through /proc/self/fd.

Backends reopen O_PATH descriptors and reach xattrs through ``/proc/self/fd/N``. Inside a
sandbox root there is no /proc: the sandbox then makes the process's working directory the
/proc/self/fd directory it opened before entering (as virtiofsd does), and ``fd_path`` gives
the relative name ``N``, which resolves there.
"""

from __future__ import annotations

import os

_prefix = "/proc/self/fd/"


def fd_path(fd: int) -> str:
    """A path naming the file ``fd`` is open on (a /proc magic link)."""
    return f"{_prefix}{fd}"


def anchor_in_working_directory(proc_self_fd: str = "/proc/self/fd") -> None:
    """Make the working directory this process's fd directory and ``fd_path`` relative to
    it, so the magic links keep working after chroot or pivot_root. Per-thread fs_structs
    made later (unshare(CLONE_FS)) inherit the working directory."""
    global _prefix
    os.chdir(proc_self_fd)
    _prefix = ""
