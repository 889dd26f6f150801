"""The archive's namespace, built once at start: every path, its attributes and where its
bytes are. Immutable afterwards, so requests read it from any thread without locks."""

from __future__ import annotations

import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from vfsframe import ops


@dataclass
class Node:
    ino: int
    mode: int
    mtime_ns: int = 0
    uid: int = 0
    gid: int = 0
    size: int = 0
    rdev: int = 0
    nlink: int = 1
    target: str = ""  # a symlink's target
    #: Opens the member's bytes for one reader (see readers.py); None for non-files.
    open_data: Callable[[], Any] | None = None
    children: dict[str, Node] = field(default_factory=dict)

    def attr(self) -> ops.Attr:
        return ops.Attr(
            st_ino=self.ino,
            st_mode=self.mode,
            st_nlink=self.nlink,
            st_uid=self.uid,
            st_gid=self.gid,
            st_rdev=self.rdev,
            st_size=self.size,
            st_blocks=(self.size + 511) // 512,
            st_atime_ns=self.mtime_ns,
            st_mtime_ns=self.mtime_ns,
            st_ctime_ns=self.mtime_ns,
        )


class UnsafeName(ValueError):
    """A member name that would leave the archive's root (``..``) or is empty."""


def member_parts(name: str) -> tuple[str, ...]:
    """The path components of a member name; leading "/" and "./" are dropped (tar -P and
    tar -C . write them), ".." is refused."""
    parts = tuple(p for p in PurePosixPath(name).parts if p not in ("/", "."))
    if any(p == ".." for p in parts):
        raise UnsafeName(f"member {name!r} points outside the archive")
    return parts


class ArchiveTree:
    """Path → Node. Add members in archive order; a later member of one name replaces the
    earlier one, as extracting the archive would."""

    def __init__(self, dir_mode: int, mtime_ns: int) -> None:
        self._dir_mode = dir_mode
        self._mtime_ns = mtime_ns
        self._next_ino = 2
        self.root = Node(1, stat.S_IFDIR | dir_mode, mtime_ns)
        self.nodes = 1

    def new_node(self, mode: int, **fields: Any) -> Node:
        node = Node(self._next_ino, mode, **fields)
        self._next_ino += 1
        self.nodes += 1
        return node

    def _parent(self, parts: tuple[str, ...]) -> Node:
        directory = self.root
        for part in parts:
            child = directory.children.get(part)
            if child is None or not stat.S_ISDIR(child.mode):
                # Implied by a deeper member (or a file replaced by a directory).
                child = self.new_node(stat.S_IFDIR | self._dir_mode, mtime_ns=self._mtime_ns)
                directory.children[part] = child
            directory = child
        return directory

    def add(self, name: str, node: Node) -> None:
        parts = member_parts(name)
        if not parts:  # the archive's own "./": it describes the root
            if stat.S_ISDIR(node.mode):
                self.root.mode, self.root.mtime_ns = node.mode, node.mtime_ns
                self.root.uid, self.root.gid = node.uid, node.gid
            return
        parent = self._parent(parts[:-1])
        existing = parent.children.get(parts[-1])
        if existing is not None and stat.S_ISDIR(existing.mode) and stat.S_ISDIR(node.mode):
            node.children = existing.children  # a directory listed after its contents
        parent.children[parts[-1]] = node

    def lookup(self, path: str) -> Node | None:
        node = self.root
        for part in path.split("/"):
            if not part:
                continue
            if not stat.S_ISDIR(node.mode):
                return None
            found = node.children.get(part)
            if found is None:
                return None
            node = found
        return node

    def finish(self) -> None:
        """Directory link counts: 2 plus one per subdirectory, as on a disk filesystem."""
        stack = [self.root]
        while stack:
            directory = stack.pop()
            subdirs = [c for c in directory.children.values() if stat.S_ISDIR(c.mode)]
            directory.nlink = 2 + len(subdirs)
            stack.extend(subdirs)
