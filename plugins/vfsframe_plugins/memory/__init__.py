"""The built-in `memory` backend: a complete POSIX filesystem held in RAM."""

from __future__ import annotations

from vfsframe.plugin import BuildContext, PluginType
from vfsframe.sandbox import no_sandbox_needs

from .backend import MemoryBackend
from .config import MemoryConfig

__all__ = ["PLUGIN", "MemoryBackend", "MemoryConfig"]


def build(config: MemoryConfig, context: BuildContext) -> MemoryBackend:
    return MemoryBackend(config)


PLUGIN = PluginType(
    name="memory",
    kind="backend",
    config=MemoryConfig,
    build=build,
    sandbox_needs=no_sandbox_needs,
    summary="A POSIX filesystem in RAM: sparse files, hard links, xattrs, locks; gone at exit.",
)
