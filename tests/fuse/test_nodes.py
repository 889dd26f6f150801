"""NodeTable: the kernel's nodeids, their lookup counts and the names that give their paths."""

from __future__ import annotations

import errno
import stat
import threading

import pytest

from vfsframe.fuse import abi
from vfsframe.nodes import Node, NodeTable

DIR = stat.S_IFDIR | 0o755
FILE = stat.S_IFREG | 0o644


@pytest.fixture
def table() -> NodeTable:
    return NodeTable()


def gone(table: NodeTable, nodeid: int) -> bool:
    with pytest.raises(OSError) as info:
        table.get(nodeid)
    return info.value.errno == errno.ESTALE


def path_fails(table: NodeTable, node: Node, code: int) -> bool:
    with pytest.raises(OSError) as info:
        table.path(node)
    return info.value.errno == code


def test_root(table: NodeTable) -> None:
    root = table.get(abi.ROOT_ID)
    assert root is table.root and root.nodeid == 1
    assert table.path(root) == "/"
    assert table.child_path(root, "x") == "/x"
    assert len(table) == 1
    assert gone(table, 0) and gone(table, 2)


def test_root_is_never_forgotten(table: NodeTable) -> None:
    table.forget(abi.ROOT_ID, 1)
    table.forget(abi.ROOT_ID, 1 << 62)
    assert table.get(abi.ROOT_ID) is table.root
    # Looked up by name (".." of a child, or its inode reached again) it is still the root.
    assert table.remember(table.root, "self", 1, DIR) is table.root
    table.forget(abi.ROOT_ID, 10)
    assert table.get(abi.ROOT_ID) is table.root
    table.clear()
    assert table.get(abi.ROOT_ID) is table.root and len(table) == 1


def test_remember_counts_lookups_and_forget_drops_at_zero(table: NodeTable) -> None:
    root = table.root
    node = table.remember(root, "a", 10, FILE)
    assert node.nodeid not in (0, abi.ROOT_ID) and node.lookups == 1
    assert table.remember(root, "a", 10, FILE) is node
    assert table.remember(root, "a", 10, FILE, count=False) is node
    assert node.lookups == 2
    table.forget(node.nodeid, 1)
    assert table.get(node.nodeid) is node and node.lookups == 1
    table.forget(node.nodeid, 1)
    assert gone(table, node.nodeid)
    assert len(table) == 1
    # Known again, the inode gets a fresh nodeid: the kernel may not see an old one reused.
    again = table.remember(root, "a", 10, FILE)
    assert again is not node and again.nodeid > node.nodeid


def test_forget_more_than_counted_and_unknown_nodeids(table: NodeTable) -> None:
    node = table.remember(table.root, "a", 10, FILE)
    table.forget(12345, 1)
    table.forget(node.nodeid, 1000)
    assert gone(table, node.nodeid)
    table.forget(node.nodeid, 1)  # twice: still no error
    assert len(table) == 1


def test_nodeids_are_distinct_per_inode(table: NodeTable) -> None:
    nodes = [table.remember(table.root, f"n{i}", 100 + i, FILE) for i in range(50)]
    assert len({node.nodeid for node in nodes}) == 50
    assert all(table.get(node.nodeid) is node for node in nodes)
    assert len(table) == 51


def test_hard_links_are_one_node(table: NodeTable) -> None:
    root = table.root
    d = table.remember(root, "d", 2, DIR)
    node = table.remember(root, "a", 7, FILE)
    assert table.remember(d, "b", 7, FILE) is node
    assert node.lookups == 2
    # The name the kernel used last comes first: the most likely to exist still.
    assert table.path(node) == "/d/b"
    table.unlinked(d, "b")
    assert table.path(node) == "/a"
    assert table.remember(d, "c", 7, FILE) is node
    assert table.path(node) == "/d/c"
    table.unlinked(d, "c")
    table.unlinked(root, "a")
    assert node.names == []
    assert path_fails(table, node, errno.ESTALE)
    assert table.get(node.nodeid) is node  # the kernel still holds it until FORGET


def test_unlinked_unknown_name_is_harmless(table: NodeTable) -> None:
    node = table.remember(table.root, "a", 7, FILE)
    table.unlinked(table.root, "never-seen")
    table.unlinked(node, "a")  # the name is under the root, not under the node
    assert table.path(node) == "/a"


def test_a_name_now_naming_another_inode(table: NodeTable) -> None:
    root = table.root
    old = table.remember(root, "x", 8, FILE)
    new = table.remember(root, "x", 9, FILE)  # replaced behind our back
    assert new is not old
    assert table.path(new) == "/x"
    assert path_fails(table, old, errno.ESTALE)
    table.forget(new.nodeid, 1)
    assert table.get(old.nodeid) is old


def test_inode_number_reused_with_another_type(table: NodeTable) -> None:
    root = table.root
    file = table.remember(root, "f", 20, FILE)
    table.unlinked(root, "f")
    directory = table.remember(root, "d", 20, DIR)
    assert directory is not file and directory.nodeid != file.nodeid
    assert table.get(file.nodeid) is file  # still held by the kernel
    assert table.remember(root, "d", 20, DIR) is directory
    table.forget(file.nodeid, 1)
    assert table.get(directory.nodeid) is directory  # forgetting the old one drops nothing else


def test_mode_is_updated_within_a_type(table: NodeTable) -> None:
    node = table.remember(table.root, "f", 5, FILE)
    assert table.remember(table.root, "f", 5, stat.S_IFREG | 0o600) is node
    assert node.mode == stat.S_IFREG | 0o600


def _chain(table: NodeTable, depth: int) -> list[Node]:
    nodes, parent = [], table.root
    for i in range(depth):
        parent = table.remember(parent, f"d{i}", 1000 + i, DIR)
        nodes.append(parent)
    return nodes


def test_paths_of_a_deep_tree(table: NodeTable) -> None:
    nodes = _chain(table, 300)
    expected = "/" + "/".join(f"d{i}" for i in range(300))
    assert table.path(nodes[-1]) == expected
    assert table.child_path(nodes[-1], "leaf") == expected + "/leaf"
    # Renaming an ancestor moves every descendant with it.
    table.renamed(nodes[0], "d1", table.root, "top", exchange=False)
    assert table.path(nodes[1]) == "/top"
    assert table.path(nodes[-1]) == "/top/" + "/".join(f"d{i}" for i in range(2, 300))
    assert table.path(nodes[0]) == "/d0"


def test_a_cycle_is_eloop_not_a_hang(table: NodeTable) -> None:
    a, b = _chain(table, 2)
    a.names = [(b, "loop")]  # only a bug could do this; path must still return
    assert path_fails(table, b, errno.ELOOP)


def test_rename_within_and_across_directories(table: NodeTable) -> None:
    root = table.root
    src = table.remember(root, "src", 2, DIR)
    dst = table.remember(root, "dst", 3, DIR)
    child = table.remember(src, "f", 4, FILE)
    table.renamed(src, "f", dst, "g", exchange=False)
    assert table.path(child) == "/dst/g"
    assert table.remember(dst, "g", 4, FILE) is child
    table.renamed(dst, "g", dst, "h", exchange=False)
    assert table.path(child) == "/dst/h"
    assert child.names == [(dst, "h")]
    # The old name is free for another inode.
    other = table.remember(src, "f", 5, FILE)
    assert other is not child and table.path(child) == "/dst/h"


def test_rename_over_an_existing_name(table: NodeTable) -> None:
    root = table.root
    moving = table.remember(root, "a", 2, FILE)
    replaced = table.remember(root, "b", 3, FILE)
    table.renamed(root, "a", root, "b", exchange=False)
    assert table.path(moving) == "/b"
    assert replaced.names == []
    assert path_fails(table, replaced, errno.ESTALE)
    assert table.remember(root, "b", 2, FILE) is moving


def test_rename_keeps_other_hard_links(table: NodeTable) -> None:
    root = table.root
    node = table.remember(root, "a", 2, FILE)
    table.remember(root, "b", 2, FILE)
    table.renamed(root, "a", root, "c", exchange=False)
    assert sorted(name for _, name in node.names) == ["b", "c"]
    table.unlinked(root, "c")
    assert table.path(node) == "/b"


def test_exchange_swaps_names(table: NodeTable) -> None:
    root = table.root
    d = table.remember(root, "d", 2, DIR)
    x = table.remember(root, "x", 3, FILE)
    y = table.remember(d, "y", 4, DIR)
    below = table.remember(y, "z", 5, FILE)
    table.renamed(root, "x", d, "y", exchange=True)
    assert table.path(x) == "/d/y"
    assert table.path(y) == "/x"
    assert table.path(below) == "/x/z"
    assert table.remember(root, "x", 4, DIR) is y
    assert table.remember(d, "y", 3, FILE) is x


def test_rename_of_a_name_never_looked_up(table: NodeTable) -> None:
    root = table.root
    target = table.remember(root, "b", 3, FILE)
    table.renamed(root, "unknown", root, "b", exchange=False)
    assert path_fails(table, target, errno.ESTALE)
    table.renamed(root, "unknown", root, "c", exchange=True)  # nothing known: nothing to do
    assert len(table) == 2


def test_forgotten_node_frees_its_names(table: NodeTable) -> None:
    root = table.root
    node = table.remember(root, "a", 2, FILE)
    table.forget(node.nodeid, 1)
    fresh = table.remember(root, "a", 2, FILE)
    assert fresh is not node
    table.unlinked(root, "a")
    assert fresh.names == []


def test_clear_forgets_all_but_the_root(table: NodeTable) -> None:
    nodes = _chain(table, 5)
    table.clear()
    assert len(table) == 1
    assert all(gone(table, node.nodeid) for node in nodes)
    again = table.remember(table.root, "d0", 1000, DIR)
    assert again.nodeid > nodes[-1].nodeid  # nodeids are not reused after a reset either


def test_set_root_ino(table: NodeTable) -> None:
    table.set_root_ino(42)
    assert table.remember(table.root, "..", 42, DIR) is table.root
    other = table.remember(table.root, "one", 1, DIR)
    assert other is not table.root


def test_concurrent_lookups_and_forgets_balance(table: NodeTable) -> None:
    rounds, threads = 2000, 8
    barrier = threading.Barrier(threads)

    def worker(index: int) -> None:
        barrier.wait()
        for _ in range(rounds):
            node = table.remember(table.root, "shared", 77, FILE)
            table.remember(table.root, f"own{index}", 100 + index, FILE)
            table.forget(table.get(node.nodeid).nodeid, 0)
        node = table.remember(table.root, "shared", 77, FILE, count=False)
        table.forget(node.nodeid, rounds)

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    shared = [node for node in table._by_id.values() if node.ino == 77]
    assert shared == []  # every counted lookup was forgotten exactly once
    own = [node for node in table._by_id.values() if node.ino >= 100]
    assert sorted(node.lookups for node in own) == [rounds] * threads
