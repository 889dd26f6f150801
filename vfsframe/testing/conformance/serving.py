"""Bringing a share up on one layer for one check, and down again."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from vfsframe.runtime import build_chain
from vfsframe.testing.conformance.drivers import ChainDriver, Driver, MountDriver
from vfsframe.testing.mount import share_config
from vfsframe.transport.devfuse import MountOptions


def backend_table(config: Mapping[str, Any] | str) -> dict[str, Any]:
    """A backend table from a dict or a TOML snippet (``type = "memory"``)."""
    return tomllib.loads(config) if isinstance(config, str) else dict(config)


def require_mounting() -> None:
    """Mount layers need /dev/fuse and root (or fusermount3); say so rather than skip."""
    if not os.path.exists("/dev/fuse"):
        raise RuntimeError('the mount layers need /dev/fuse; set `layers = ("inprocess",)`')
    if os.geteuid() != 0 and not shutil.which("fusermount3"):
        raise RuntimeError("the mount layers need root or fusermount3 (package fuse3)")


@contextlib.contextmanager
def served(layer: str, share: Any) -> Iterator[Driver]:
    """A driver for ``share`` on ``layer``: the chain in process, or a mount of it."""
    if layer == "inprocess":
        chain = build_chain(share.backend, share.middleware)
        try:
            chain.start()
            yield ChainDriver(chain)
        finally:
            chain.close()
        return
    from vfsframe.cli.mount import build_mount  # the CLI's own choice of transport

    require_mounting()
    mountpoint = Path(tempfile.mkdtemp(prefix=f"vfsframe-kit-{layer}-"))
    mountpoint.chmod(0o755)
    # Checks assert the modes they create with; the in-process layer's umask is 022 too.
    umask = os.umask(0o022)
    try:
        mount, chain = build_mount(
            layer, share, str(mountpoint), MountOptions.parse("default_permissions")
        )
        try:
            chain.start()
            mount.mount()
            mount.start()
            try:
                yield MountDriver(mountpoint, layer)
            finally:
                mount.unmount()
        finally:
            chain.close()
    finally:
        os.umask(umask)
        mountpoint.rmdir()


def share_for(
    layer: str,
    backend: Mapping[str, Any] | str,
    middleware: list[dict[str, Any]],
    options: Mapping[str, Any],
) -> Any:
    """The validated share config a check serves."""
    share_options = dict(options)
    if layer == "fusepy":
        # libfuse gives each name its own kernel inode: cached attributes of one name go stale
        # when another name changes them (st_nlink after link/unlink), so no attribute cache.
        share_options["cache"] = "none"
    return share_config(backend_table(backend), middleware=middleware, **share_options)
