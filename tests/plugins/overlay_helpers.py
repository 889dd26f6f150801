"""Overlays of memory-backend layers, driven in-process through a ShareChain."""

from __future__ import annotations

import hashlib
import stat
from dataclasses import dataclass

from vfsframe_plugins.memory import MemoryBackend
from vfsframe_plugins.overlay import OverlayBackend

from tests.plugins.memfs_helpers import ROOT, MemFs
from vfsframe import ops
from vfsframe.chain import ShareChain


@dataclass
class Overlay:
    """The merged view (``fs``), and each layer's own view (upper first when there is one)."""

    fs: MemFs
    backend: OverlayBackend
    upper: MemFs | None
    lowers: list[MemFs]


def memory_layer() -> MemFs:
    return MemFs(ShareChain(MemoryBackend()), ROOT)


def make_overlay(
    lowers: list[MemFs], upper: MemFs | None = None, ctx: ops.Context = ROOT
) -> Overlay:
    backend = OverlayBackend(
        [layer.chain for layer in lowers], upper.chain if upper is not None else None
    )
    return Overlay(MemFs(ShareChain(backend), ctx), backend, upper, lowers)


def tree(fs: MemFs, path: str = "/") -> dict[str, str]:
    """Every name below ``path`` → its kind and content digest, for before/after comparisons."""
    out: dict[str, str] = {}
    for name in sorted(fs.names(path)):
        child = path.rstrip("/") + "/" + name
        attr = fs.stat(child)
        if stat.S_ISDIR(attr.st_mode):
            out[child] = f"dir {attr.st_mode:o} {attr.st_uid}"
            out.update(tree(fs, child))
        elif stat.S_ISREG(attr.st_mode):
            digest = hashlib.sha256(fs.read_file(child)).hexdigest()[:16]
            out[child] = f"file {attr.st_mode:o} {attr.st_uid} {attr.st_mtime_ns} {digest}"
        elif stat.S_ISLNK(attr.st_mode):
            target = fs.chain.readlink(ops.ReadlinkRequest(fs.ctx, child))
            out[child] = f"link {target}"
        else:
            out[child] = f"node {attr.st_mode:o} {attr.st_rdev}"
    return out
