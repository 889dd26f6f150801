"""`archive`: a read-only vfsframe backend serving what a tar or zip archive holds."""

from __future__ import annotations

from vfsframe.plugin import BuildContext, PluginType

from .backend import ArchiveBackend
from .config import ArchiveConfig

__all__ = ["PLUGIN", "ArchiveBackend", "ArchiveConfig"]


def build(config: ArchiveConfig, context: BuildContext) -> ArchiveBackend:
    return ArchiveBackend(config)


PLUGIN = PluginType(
    name="archive",
    kind="backend",
    config=ArchiveConfig,
    build=build,
    summary="The contents of a tar (plain, gz, bz2, xz) or zip archive, read-only.",
)
