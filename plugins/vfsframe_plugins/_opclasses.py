"""What every hook is, in one table the built-in middleware share.

For each operation of ``vfsframe.hookspecs.OPERATIONS``: its *op class* (the unit ACL rules,
the log filter and the docs speak of), the request fields naming the paths it touches, and
whether it changes the filesystem. Adding a hook to the hookspecs without a row here fails
at import, so no middleware can silently miss an operation.

Also here: ``install_wrappers``, which gives a middleware class one generated
``@hookimpl(wrapper=True)`` method per operation, for middleware that treat every operation
alike (log, metrics, acl).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from vfsframe import ops
from vfsframe.hookspecs import OPERATIONS, hookimpl

OpClass = Literal["read", "write", "create", "delete", "rename", "setattr", "xattr", "list"]
OP_CLASSES: tuple[str, ...] = OpClass.__args__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Operation:
    """One row of the table.

    ``paths`` pairs each path field of the request with the op class it is checked as; a
    class of None means the operation is never refused (releasing a handle, statfs, ...):
    refusing it could only leak resources or confuse the kernel.
    """

    name: str
    paths: tuple[tuple[str, OpClass | None], ...]
    mutating: bool = False

    @property
    def op_class(self) -> OpClass | None:
        """The class of the first path: what the operation is mostly about."""
        return self.paths[0][1] if self.paths else None


def _op(name: str, op_class: OpClass | None, *, mutating: bool = False) -> Operation:
    return Operation(name, (("path", op_class),), mutating)


_TABLE: tuple[Operation, ...] = (
    # getattr answers LOOKUP and stat(2): it is a name being seen, hence "list".
    _op("getattr", "list"),
    _op("setattr", "setattr", mutating=True),
    _op("readlink", "read"),
    _op("symlink", "create", mutating=True),
    _op("mknod", "create", mutating=True),
    _op("mkdir", "create", mutating=True),
    _op("unlink", "delete", mutating=True),
    _op("rmdir", "delete", mutating=True),
    Operation("rename", (("old", "rename"), ("new", "rename")), mutating=True),
    # A link makes `old` reachable under a second name: both ends are checked.
    Operation("link", (("old", "create"), ("new", "create")), mutating=True),
    # open is read or write by its flags (see classes_of); "read" is the row's default.
    _op("open", "read"),
    _op("create", "create", mutating=True),
    _op("read", "read"),
    _op("write", "write", mutating=True),
    _op("flush", None),
    _op("release", None),
    _op("fsync", None),
    _op("opendir", "list"),
    _op("readdir", "list"),
    _op("releasedir", None),
    _op("fsyncdir", None),
    _op("statfs", None),
    _op("setxattr", "xattr", mutating=True),
    _op("getxattr", "xattr"),
    _op("listxattr", "xattr"),
    _op("removexattr", "xattr", mutating=True),
    # access(2) is checked per bit of its mask (see classes_of).
    _op("access", "list"),
    _op("getlk", "read"),
    _op("setlk", "read"),
    _op("fallocate", "write", mutating=True),
    _op("lseek", "read"),
    Operation("copy_file_range", (("path_in", "read"), ("path_out", "write")), mutating=True),
    Operation("syncfs", ()),
    Operation("destroy", ()),
)

OPERATION: dict[str, Operation] = {row.name: row for row in _TABLE}

_missing = set(OPERATIONS) ^ set(OPERATION)
if _missing:  # the hookspecs and this table must list the same operations
    raise ImportError(f"vfsframe_plugins._opclasses does not match the hookspecs: {_missing}")

MUTATING: frozenset[str] = frozenset(row.name for row in _TABLE if row.mutating)


def writes_on_open(flags: int) -> bool:
    """Whether an open with ``flags`` may change the file (write access or O_TRUNC)."""
    return flags & os.O_ACCMODE != os.O_RDONLY or bool(flags & os.O_TRUNC)


def is_mutating(op: str, req: Any) -> bool:
    """Whether this request may change the filesystem (open counts when it may write)."""
    if op == "open":
        return writes_on_open(req.flags)
    return op in MUTATING


def checks(op: str, req: Any) -> list[tuple[str, OpClass]]:
    """The (path, op class) pairs a request must be allowed for; empty: never refused."""
    if op == "open":
        return [(req.path, cls) for cls in _open_classes(req.flags)]
    if op == "access":
        return [(req.path, cls) for cls in _access_classes(req.mask)]
    return [(getattr(req, field), cls) for field, cls in OPERATION[op].paths if cls is not None]


def _open_classes(flags: int) -> list[OpClass]:
    mode = flags & os.O_ACCMODE
    classes: list[OpClass] = []
    if mode in (os.O_RDONLY, os.O_RDWR):
        classes.append("read")
    if mode != os.O_RDONLY or flags & os.O_TRUNC:
        classes.append("write")
    return classes


def _access_classes(mask: int) -> list[OpClass]:
    classes: list[OpClass] = ["list"]  # F_OK: the name must at least be visible
    if mask & (os.R_OK | os.X_OK):
        classes.append("read")
    if mask & os.W_OK:
        classes.append("write")
    return classes


def request_paths(op: str, req: Any) -> list[str]:
    """Every path a request names, for log lines and cache invalidation."""
    if op == "open" or op == "access":
        return [req.path]
    return [getattr(req, field) for field, _ in OPERATION[op].paths]


def parent_of(path: str) -> str:
    """The directory holding ``path`` ("/" for "/" itself)."""
    head = path.rpartition("/")[0]
    return head or "/"


def child_of(directory: str, name: str) -> str:
    return f"/{name}" if directory == "/" else f"{directory}/{name}"


# -- generated wrappers ----------------------------------------------------------------------

#: What ``install_wrappers`` asks for: given an operation name, the body of its wrapper, a
#: generator method ``(self, req)`` that yields once to the rest of the chain.
WrapperFactory = Callable[[str], Callable[[Any, Any], Generator[None, Any, Any]]]


def install_wrappers(
    cls: type, factory: WrapperFactory, operations: Iterable[str] = OPERATIONS, **options: bool
) -> type:
    """Give ``cls`` a ``vfs_<op>`` wrapper for each operation that it does not define itself.

    Returns ``cls``, so it may be used as ``install_wrappers(Log, make_wrapper)`` after the
    class body. ``options`` are further hookimpl options (``trylast=True``). pluggy reads the hook's argument names from the function, so the generated
    function must take exactly ``(self, req)``.
    """
    for op in operations:
        name = f"vfs_{op}"
        if name in vars(cls):
            continue  # the class wraps this one by hand
        function = factory(op)
        function.__name__ = name
        function.__qualname__ = f"{cls.__qualname__}.{name}"
        setattr(cls, name, hookimpl(wrapper=True, **options)(function))
    return cls


def as_attr(attr: Any) -> ops.Attr:
    """An ``ops.Attr`` copy of an Attr or ``os.stat_result``, for middleware that edit one."""
    if isinstance(attr, ops.Attr):
        return ops.Attr(
            attr.st_ino,
            attr.st_mode,
            attr.st_nlink,
            attr.st_uid,
            attr.st_gid,
            attr.st_rdev,
            attr.st_size,
            attr.st_blocks,
            attr.st_blksize,
            attr.st_atime_ns,
            attr.st_mtime_ns,
            attr.st_ctime_ns,
        )
    return ops.Attr(
        st_ino=attr.st_ino,
        st_mode=attr.st_mode,
        st_nlink=attr.st_nlink,
        st_uid=attr.st_uid,
        st_gid=attr.st_gid,
        st_rdev=getattr(attr, "st_rdev", 0),
        st_size=attr.st_size,
        st_blocks=getattr(attr, "st_blocks", 0),
        st_blksize=getattr(attr, "st_blksize", 4096),
        st_atime_ns=attr.st_atime_ns,
        st_mtime_ns=attr.st_mtime_ns,
        st_ctime_ns=attr.st_ctime_ns,
    )
