"""Mounting a share through the host kernel for tests, benchmarks and plugin authors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vfsframe.chain import ShareChain
from vfsframe.config import validate_config
from vfsframe.runtime import build_chain, session_options
from vfsframe.session import FuseSession, SessionOptions
from vfsframe.transport.devfuse import DevFuseMount, MountOptions


def share_config(backend: dict[str, Any], **share: Any) -> Any:
    """A validated share config from plain dicts: ``share_config({"type": "memory"})``."""
    document = {"share": [{"tag": share.pop("tag", "test"), "backend": backend, **share}]}
    return validate_config(document, "<test>").shares[0]


@contextlib.contextmanager
def mounted(
    mountpoint: str | Path,
    chain: ShareChain,
    options: SessionOptions | None = None,
    mount_options: str = "allow_other,default_permissions",
) -> Iterator[DevFuseMount]:
    """Serve ``chain`` at ``mountpoint`` for the duration of the block, in this process."""
    session = FuseSession(chain, options)
    mount = DevFuseMount(session, str(mountpoint), MountOptions.parse(mount_options))
    chain.start()
    mount.mount()
    mount.start()
    try:
        yield mount
    finally:
        mount.unmount()


@contextlib.contextmanager
def mounted_share(
    mountpoint: str | Path, share: Any, mount_options: str = "allow_other,default_permissions"
) -> Iterator[DevFuseMount]:
    """Build a share config's chain and mount it; the chain is closed afterwards."""
    chain = build_chain(share.backend, share.middleware)
    try:
        with mounted(mountpoint, chain, session_options(share), mount_options) as mount:
            yield mount
    finally:
        chain.close()
