"""The shared operation table: complete, and right about the operations that vary."""

from __future__ import annotations

import os

from vfsframe_plugins._opclasses import (
    MUTATING,
    OP_CLASSES,
    OPERATION,
    checks,
    install_wrappers,
    is_mutating,
    request_paths,
)

from vfsframe import ops
from vfsframe.hookspecs import OPERATIONS

from .helpers import ROOT


def test_every_hook_has_a_row_with_a_known_class() -> None:
    assert set(OPERATION) == set(OPERATIONS)
    for row in OPERATION.values():
        for field, op_class in row.paths:
            assert op_class is None or op_class in OP_CLASSES, row
            assert field in {"path", "old", "new", "path_in", "path_out"}


def test_mutating_operations() -> None:
    expected = {
        "setattr", "symlink", "mknod", "mkdir", "unlink", "rmdir", "rename", "link", "create",
        "write", "setxattr", "removexattr", "fallocate", "copy_file_range",
    }  # fmt: skip
    assert expected == MUTATING
    assert is_mutating("open", ops.OpenRequest(ROOT, "/f", os.O_WRONLY))
    assert is_mutating("open", ops.OpenRequest(ROOT, "/f", os.O_RDONLY | os.O_TRUNC))
    assert not is_mutating("open", ops.OpenRequest(ROOT, "/f", os.O_RDONLY))


def test_open_access_and_two_path_operations_are_checked_per_path() -> None:
    assert checks("open", ops.OpenRequest(ROOT, "/f", os.O_RDONLY)) == [("/f", "read")]
    assert checks("open", ops.OpenRequest(ROOT, "/f", os.O_RDWR)) == [
        ("/f", "read"),
        ("/f", "write"),
    ]
    assert checks("open", ops.OpenRequest(ROOT, "/f", os.O_WRONLY)) == [("/f", "write")]
    assert checks("access", ops.AccessRequest(ROOT, "/f", os.W_OK)) == [
        ("/f", "list"),
        ("/f", "write"),
    ]
    assert checks("rename", ops.RenameRequest(ROOT, "/a", "/b")) == [
        ("/a", "rename"),
        ("/b", "rename"),
    ]
    assert checks("link", ops.LinkRequest(ROOT, "/a", "/b")) == [("/a", "create"), ("/b", "create")]
    req = ops.CopyFileRangeRequest(ROOT, "/a", None, 0, "/b", None, 0, 1)
    assert checks("copy_file_range", req) == [("/a", "read"), ("/b", "write")]
    assert request_paths("copy_file_range", req) == ["/a", "/b"]
    assert checks("release", ops.ReleaseRequest(ROOT, "/a", None)) == []


def test_install_wrappers_keeps_hand_written_hooks() -> None:
    class Sample:
        def vfs_read(self, req: object) -> None:
            return None

    def factory(op: str):  # type: ignore[no-untyped-def]
        def wrapper(self, req):  # type: ignore[no-untyped-def]
            return (yield)

        return wrapper

    install_wrappers(Sample, factory, ["read", "write"])
    assert not hasattr(Sample.vfs_read, "vfsframe_impl")
    assert Sample.vfs_write.vfsframe_impl["wrapper"] is True
    assert Sample.vfs_write.__name__ == "vfs_write"
