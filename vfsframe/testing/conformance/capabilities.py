"""What a backend declares about itself, so the kit runs only the checks that apply.

A check names the capabilities it needs (``@requires("hard_links")``); the kit compares them
with the class's ``capabilities`` at collection time and deselects, visibly, what does not
apply. Nothing is inferred from the backend itself: a declaration that is wrong makes checks
fail, which is the point.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from vfsframe.testing.conformance.seed import Seed


@dataclass(frozen=True)
class Capabilities:
    """The features a backend claims. Defaults describe a complete writable POSIX backend."""

    #: Creates, writes, renames and removals work; False: every change must fail with EROFS.
    writable: bool = True
    hard_links: bool = True
    symlinks: bool = True
    #: ``user.*`` extended attributes can be set, read, listed and removed.
    xattrs: bool = True
    #: POSIX record locks (fcntl) are served by the backend (``Backend.posix_locks``).
    posix_locks: bool = False
    #: BSD flock(2) locks are served by the backend (``Backend.flock_locks``).
    flock_locks: bool = False
    rename_noreplace: bool = True
    rename_exchange: bool = True
    #: chmod is kept (the mode reads back as set).
    chmod: bool = True
    #: utimensat is kept (atime and mtime read back as set, to the nanosecond).
    utimens: bool = True
    #: A file stays readable and writable through an open descriptor after its last name goes.
    unlink_while_open: bool = True
    #: Content that exists when the backend starts; read-only backends must declare it.
    seed: Seed | None = None

    def __post_init__(self) -> None:
        if not self.writable and self.seed is None:
            raise ValueError("a read-only backend must declare its content: Capabilities(seed=...)")

    @classmethod
    def read_only(cls, seed: Seed, **features: bool) -> Capabilities:
        """A backend that serves ``seed`` and refuses every change."""
        changes = {"rename_noreplace", "rename_exchange", "chmod", "utimens", "unlink_while_open"}
        defaults = dict.fromkeys(changes, False)
        return cls(writable=False, seed=seed, **{**defaults, **features})

    def has(self, name: str) -> bool:
        """Whether a requirement holds: a field name, ``read_only`` or ``seed``."""
        if name == "read_only":
            return not self.writable
        if name == "seed":
            return self.seed is not None
        if name not in {f.name for f in fields(self)}:
            raise ValueError(f"unknown capability {name!r}")
        return bool(getattr(self, name))
