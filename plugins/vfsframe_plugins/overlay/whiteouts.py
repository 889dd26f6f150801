"""Whiteouts and opaque markers in the OCI image-layer convention, understood by any backend.

A layer hides ``NAME`` of the layers below it with an empty regular file ``.wh.NAME`` next to
it, and hides everything below a directory with a file ``.wh..wh..opq`` inside it. Names that
start with ``.wh.`` are the overlay's own: never listed, never found, never created by users.
Lower layers made by Linux overlayfs mark whiteouts as 0/0 character devices and opaque
directories with the xattr ``trusted.overlay.opaque=y``; those are read too.
"""

from __future__ import annotations

import stat
from typing import Any

PREFIX = ".wh."
OPAQUE = ".wh..wh..opq"
# How Linux overlayfs marks an opaque directory (read in lower layers it wrote).
OVERLAYFS_OPAQUE = "trusted.overlay.opaque"
# Copy-ups are assembled here (in the upper layer's root) and renamed into place.
WORK_DIR = ".wh..wh..work"


def is_reserved(name: str) -> bool:
    return name.startswith(PREFIX)


def whiteout_of(name: str) -> str:
    return PREFIX + name


def hidden_name(entry_name: str) -> str | None:
    """The name a ``.wh.NAME`` entry hides; None for markers such as the opaque file."""
    if entry_name.startswith(PREFIX + PREFIX) or not entry_name.startswith(PREFIX):
        return None
    return entry_name[len(PREFIX) :]


def is_device_whiteout(attr: Any) -> bool:
    """An overlayfs-style whiteout: a character device with device number 0/0."""
    return stat.S_ISCHR(attr.st_mode) and attr.st_rdev == 0


def join(parent: str, name: str) -> str:
    return parent + name if parent == "/" else f"{parent}/{name}"


def split(path: str) -> tuple[str, str]:
    """``("/a/b", "c")`` from ``"/a/b/c"``; ``("/", "c")`` from ``"/c"``."""
    parent, _, name = path.rstrip("/").rpartition("/")
    return parent or "/", name
