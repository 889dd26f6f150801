"""The overlay against a reference model: random operations on an overlay of two memory
lowers under a memory upper, and the same operations on one memory filesystem holding the
merged tree; after every step both must show the same names, types, modes and contents, and
give the same errors. Then nested overlays and concurrent copy-ups."""

from __future__ import annotations

import errno
import os
import random
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from vfsframe_plugins.memory import MemoryBackend

from tests.plugins.memfs_helpers import ROOT, MemFs
from tests.plugins.overlay_helpers import make_overlay, memory_layer
from vfsframe import ops
from vfsframe.chain import ShareChain
from vfsframe.config import validate_config
from vfsframe.runtime import build_chain

NAMES = ["a", "b", "c", "d"]


def shape(fs: MemFs, path: str = "/") -> dict[str, tuple[int, int, bytes]]:
    """Name → (type and mode, nlink for files, content): everything but times and inodes."""
    out: dict[str, tuple[int, int, bytes]] = {}
    for name in fs.names(path):
        child = path.rstrip("/") + "/" + name
        attr = fs.stat(child)
        if stat.S_ISDIR(attr.st_mode):
            out[child] = (attr.st_mode, 0, b"")
            out.update(shape(fs, child))
        else:
            out[child] = (attr.st_mode, attr.st_nlink, fs.read_file(child))
    return out


def populate(fs: MemFs, rng: random.Random, tag: str, depth: int = 0) -> None:
    for name in rng.sample(NAMES, 3):
        path = f"/{name}" if depth == 0 else None
        path = path or f"{tag}/{name}"
        try:
            if depth < 2 and rng.random() < 0.4:
                fs.mkdir(path)
                populate(fs, rng, path, depth + 1)
            else:
                fs.make_file(path, f"{tag}:{path}".encode())
        except OSError:
            pass  # the name exists with another type in this layer


def merge_into(reference: MemFs, layer: MemFs, path: str = "/") -> None:
    """Apply a layer on top of the reference, as the overlay's lookup rules merge it."""
    for name in layer.names(path):
        child = path.rstrip("/") + "/" + name
        attr = layer.stat(child)
        try:
            existing = reference.stat(child)
        except FileNotFoundError:
            existing = None
        if stat.S_ISDIR(attr.st_mode):
            if existing is not None and not stat.S_ISDIR(existing.st_mode):
                reference.unlink(child)
                existing = None
            if existing is None:
                reference.mkdir(child, stat.S_IMODE(attr.st_mode))
            merge_into(reference, layer, child)
        else:
            if existing is not None:
                remove_tree(reference, child)
            reference.make_file(child, layer.read_file(child), stat.S_IMODE(attr.st_mode))


def remove_tree(fs: MemFs, path: str) -> None:
    if stat.S_ISDIR(fs.stat(path).st_mode):
        for name in fs.names(path):
            remove_tree(fs, path.rstrip("/") + "/" + name)
        fs.rmdir(path)
    else:
        fs.unlink(path)


def random_path(rng: random.Random) -> str:
    return "/" + "/".join(rng.choice(NAMES) for _ in range(rng.randint(1, 3)))


def outcome(action: Callable[[], object]) -> int:
    try:
        action()
    except OSError as exc:
        return exc.errno
    return 0


def write(fs: MemFs, path: str, offset: int, data: bytes) -> None:
    fh = fs.open(path, os.O_WRONLY)
    try:
        fs.write(path, fh, offset, data)
    finally:
        fs.release(path, fh)


def step(fs: MemFs, rng: random.Random, counter: int) -> tuple[str, Callable[[], object]]:
    """One random operation, applied the same way to any filesystem."""
    path, other = random_path(rng), random_path(rng)
    choices: list[tuple[str, Callable[[], object]]] = [
        ("create", lambda: fs.make_file(path, f"new {counter}".encode())),
        ("write", lambda: write(fs, path, rng.randint(0, 20), b"W" * rng.randint(1, 9))),
        ("truncate", lambda: fs.setattr(path, size=rng.randint(0, 30))),
        ("chmod", lambda: fs.setattr(path, mode=rng.choice([0o600, 0o755, 0o640]))),
        ("unlink", lambda: fs.unlink(path)),
        ("mkdir", lambda: fs.mkdir(path)),
        ("rmdir", lambda: fs.rmdir(path)),
        ("rename", lambda: fs.rename(path, other)),
        ("link", lambda: fs.link(path, other)),
    ]
    return choices[counter % len(choices)] if rng.random() < 0.3 else rng.choice(choices)


@pytest.mark.parametrize("seed", range(12))
def test_random_operations_match_a_merged_reference(seed: int) -> None:
    rng = random.Random(seed)
    top, bottom = memory_layer(), memory_layer()
    populate(bottom, rng, "")
    populate(top, rng, "")
    reference = MemFs(ShareChain(MemoryBackend()), ROOT)
    merge_into(reference, bottom)
    merge_into(reference, top)
    overlay = make_overlay([top, bottom], memory_layer())
    lowers_before = [shape(top), shape(bottom)]
    assert shape(overlay.fs) == shape(reference)
    for counter in range(150):
        state = rng.getstate()
        name, action = step(overlay.fs, rng, counter)
        ours = outcome(action)
        rng.setstate(state)
        _, action = step(reference, rng, counter)
        theirs = outcome(action)
        if ours == errno.EXDEV and name == "rename":
            # A directory reaching into a lower layer (overlayfs without redirect_dir): the
            # reference moved it; carry on from the overlay's state.
            assert theirs == 0 or theirs != errno.EXDEV
            reference = rebuild(overlay.fs)
        else:
            assert ours == theirs, (
                seed,
                counter,
                name,
                errno.errorcode.get(ours),
                errno.errorcode.get(theirs),
            )
        assert shape(overlay.fs) == shape(reference), (seed, counter, name)
    assert [shape(top), shape(bottom)] == lowers_before


def rebuild(fs: MemFs) -> MemFs:
    reference = MemFs(ShareChain(MemoryBackend()), ROOT)
    merge_into(reference, fs)
    return reference


def test_overlay_of_overlays_built_from_config() -> None:
    """An overlay as the lower layer of another: nested configs build nested chains."""
    document = {
        "share": [
            {
                "tag": "t",
                "backend": {
                    "type": "overlay",
                    "lower": [
                        {
                            "type": "overlay",
                            "lower": [{"type": "memory"}],
                            "upper": {"type": "memory"},
                        }
                    ],
                    "upper": {"type": "memory"},
                },
            }
        ]
    }
    share = validate_config(document, "<t>").shares[0]
    chain = build_chain(share.backend, share.middleware)
    try:
        inner = MemFs(chain.backend.lowers[0].chain, ROOT)
        inner.make_file("/f", b"inner")  # lands in the inner overlay's upper
        outer = MemFs(chain, ROOT)
        assert outer.read_file("/f") == b"inner"
        write(outer, "/f", 0, b"OUTER")
        assert outer.read_file("/f") == b"OUTER"
        assert inner.read_file("/f") == b"inner"
        outer.unlink("/f")
        assert outer.names("/") == [] and inner.names("/") == ["f"]
    finally:
        chain.close()


def test_concurrent_writers_copy_up_once() -> None:
    lower = memory_layer()
    for index in range(8):
        lower.make_file(f"/f{index}", b"." * 1000)
    ov = make_overlay([lower], memory_layer())
    numbers = {index: ov.fs.stat(f"/f{index}").st_ino for index in range(8)}
    errors: list[BaseException] = []

    def writer(worker: int) -> None:
        try:
            for index in range(8):
                write(ov.fs, f"/f{index}", worker * 10, str(worker).encode() * 10)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(worker,)) for worker in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for index in range(8):
        data = ov.fs.read_file(f"/f{index}")
        assert data[:60] == b"".join(str(w).encode() * 10 for w in range(6))
        assert ov.fs.stat(f"/f{index}").st_ino == numbers[index]
    assert ov.upper is not None
    assert ov.upper.names("/.wh..wh..work") == []
    assert ov.fs.chain.getattr(ops.GetattrRequest(ROOT, "/")).st_ino == 1


def test_object_store_as_upper_and_passthrough_as_lower(tmp_path: Path) -> None:
    """Markers are plain empty files, so an object store can be the upper layer."""
    lower, store = tmp_path / "lower", tmp_path / "store"
    (lower / "d").mkdir(parents=True)
    (lower / "f").write_bytes(b"lowerdata")
    (lower / "d" / "x").write_bytes(b"x")
    store.mkdir()
    backend = {
        "type": "overlay",
        "lower": [{"type": "passthrough", "root": str(lower), "readonly": True}],
        "upper": {"type": "objectstore", "store": {"type": "local", "root": str(store)}},
    }
    share = validate_config({"share": [{"tag": "t", "backend": backend}]}, "<t>").shares[0]
    chain = build_chain(share.backend, share.middleware)
    try:
        fs = MemFs(chain, ROOT)
        ino = fs.stat("/f").st_ino
        write(fs, "/f", 0, b"UPPER")
        assert fs.read_file("/f") == b"UPPERdata" and fs.stat("/f").st_ino == ino
        fs.unlink("/d/x")
        fs.rmdir("/d")
        fs.mkdir("/d")
        assert fs.names("/d") == []
        fs.rename("/f", "/d/f2")
        assert sorted(fs.names("/")) == ["d"] and fs.read_file("/d/f2") == b"UPPERdata"
    finally:
        chain.close()
    assert (lower / "f").read_bytes() == b"lowerdata" and (lower / "d" / "x").exists()
