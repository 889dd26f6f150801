"""The kernel's view of the share: nodeids, the names they are known by, lookup counts.

Backends are path-based and know nothing of nodeids. The session gives the kernel one nodeid
per backend inode (keyed by ``st_ino``), so every hard link of a file is one kernel inode and
its nlink is never stale on another name. A node remembers the (parent, name) pairs it was
reached through; its path is built from the first of them, so a rename updates one entry.
"""

from __future__ import annotations

import errno
import stat
import threading

from vfsframe.fuse import abi


class Node:
    __slots__ = ("ino", "lookups", "mode", "names", "nodeid")

    def __init__(self, nodeid: int, ino: int, mode: int) -> None:
        self.nodeid = nodeid
        self.ino = ino
        self.mode = mode
        self.lookups = 0
        # (parent, name) pairs, most authoritative first; empty once every name is gone.
        self.names: list[tuple[Node, str]] = []


class NodeTable:
    """Thread-safe map of nodeid → Node, with the name index that keeps paths current."""

    def __init__(self, root_ino: int = 1, root_mode: int = stat.S_IFDIR | 0o755) -> None:
        self._lock = threading.Lock()
        self._next_nodeid = abi.ROOT_ID + 1
        self.root = Node(abi.ROOT_ID, root_ino, root_mode)
        self.root.lookups = 1  # the kernel never forgets the root
        self._by_id: dict[int, Node] = {abi.ROOT_ID: self.root}
        self._by_ino: dict[int, Node] = {root_ino: self.root}
        self._by_name: dict[tuple[int, str], Node] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, nodeid: int) -> Node:
        try:
            return self._by_id[nodeid]
        except KeyError:
            raise OSError(errno.ESTALE, f"unknown nodeid {nodeid}") from None

    def path(self, node: Node) -> str:
        """The node's path in the share ("/" for the root)."""
        parts: list[str] = []
        depth = 0
        while node is not self.root:
            names = node.names  # replaced, never mutated in place: safe without the lock
            if not names:
                raise OSError(errno.ESTALE, "node has no name left")
            node, name = names[0]
            parts.append(name)
            depth += 1
            if depth > abi.PATH_MAX:  # a cycle would be a bug; never loop forever on one
                raise OSError(errno.ELOOP, "node path does not reach the root")
        return "/" + "/".join(reversed(parts))

    def child_path(self, parent: Node, name: str) -> str:
        base = self.path(parent)
        return base + name if base == "/" else f"{base}/{name}"

    def remember(self, parent: Node, name: str, ino: int, mode: int, count: bool = True) -> Node:
        """Record that ``parent/name`` is inode ``ino``; count a lookup unless told not to."""
        with self._lock:
            node = self._by_ino.get(ino)
            if node is not None and stat.S_IFMT(node.mode) != stat.S_IFMT(mode):
                # The backend reused an inode number the kernel still holds: a new node.
                self._drop_ino(node)
                node = None
            if node is None:
                node = Node(self._next_nodeid, ino, mode)
                self._next_nodeid += 1
                self._by_id[node.nodeid] = node
                self._by_ino[ino] = node
            node.mode = mode
            key = (parent.nodeid, name)
            previous = self._by_name.get(key)
            if previous is not node:
                if previous is not None:
                    _drop_name(previous, parent, name)
                self._by_name[key] = node
                # The name the kernel just used is the one most likely to still exist.
                node.names = [(parent, name), *node.names]
            if count:
                node.lookups += 1
            return node

    def forget(self, nodeid: int, count: int) -> None:
        with self._lock:
            node = self._by_id.get(nodeid)
            if node is None or node is self.root:
                return
            node.lookups -= count
            if node.lookups <= 0:
                del self._by_id[nodeid]
                self._drop_ino(node)
                for parent, name in node.names:
                    if self._by_name.get((parent.nodeid, name)) is node:
                        del self._by_name[(parent.nodeid, name)]

    def _drop_ino(self, node: Node) -> None:
        if self._by_ino.get(node.ino) is node:
            del self._by_ino[node.ino]

    def unlinked(self, parent: Node, name: str) -> None:
        """``parent/name`` no longer exists."""
        with self._lock:
            node = self._by_name.pop((parent.nodeid, name), None)
            if node is not None:
                _drop_name(node, parent, name)

    def renamed(
        self, old_parent: Node, old: str, new_parent: Node, new: str, exchange: bool
    ) -> None:
        with self._lock:
            moving = self._by_name.pop((old_parent.nodeid, old), None)
            replaced = self._by_name.pop((new_parent.nodeid, new), None)
            if moving is not None:
                _rename_name(moving, old_parent, old, new_parent, new)
                self._by_name[(new_parent.nodeid, new)] = moving
            if replaced is not None and replaced is not moving:
                if exchange:
                    _rename_name(replaced, new_parent, new, old_parent, old)
                    self._by_name[(old_parent.nodeid, old)] = replaced
                else:
                    _drop_name(replaced, new_parent, new)

    def clear(self) -> None:
        """Forget everything but the root (the kernel connection is gone)."""
        with self._lock:
            self._by_id = {abi.ROOT_ID: self.root}
            self._by_ino = {self.root.ino: self.root}
            self._by_name = {}

    def set_root_ino(self, ino: int) -> None:
        with self._lock:
            self._by_ino.pop(self.root.ino, None)
            self.root.ino = ino
            self._by_ino[ino] = self.root


def _drop_name(node: Node, parent: Node, name: str) -> None:
    node.names = [(p, n) for p, n in node.names if not (p is parent and n == name)]


def _rename_name(node: Node, old_parent: Node, old: str, new_parent: Node, new: str) -> None:
    _drop_name(node, old_parent, old)
    node.names = [(new_parent, new), *node.names]
