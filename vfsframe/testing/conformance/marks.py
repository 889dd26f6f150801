"""The two marks a check carries: what it needs from the backend, and where it can run."""

from __future__ import annotations

import pytest

#: Every layer the kit knows: the hook chain in process, and real mounts through the host
#: kernel over vfsframe's /dev/fuse session or libfuse's high-level API.
LAYERS = ("inprocess", "devfuse", "fusepy")
MOUNT_LAYERS = ("devfuse", "fusepy")


def requires(*capabilities: str) -> pytest.MarkDecorator:
    """The check applies only to backends declaring all of ``capabilities``."""
    return pytest.mark.vfsframe_requires(*capabilities)


def only_mounted(reason: str) -> pytest.MarkDecorator:
    """The check needs the kernel (its VFS decides the outcome, or it needs processes)."""
    return pytest.mark.vfsframe_layers(*MOUNT_LAYERS, reason=reason)


def only_in_process(reason: str) -> pytest.MarkDecorator:
    """The check drives the hook chain itself (e.g. as two lock owners)."""
    return pytest.mark.vfsframe_layers("inprocess", reason=reason)
