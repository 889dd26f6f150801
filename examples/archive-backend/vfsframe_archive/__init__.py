"""`archive`: a read-only vfsframe backend serving what a tar or zip archive holds."""

from __future__ import annotations

from vfsframe.plugin import BuildContext, PluginType
from vfsframe.sandbox import SandboxNeeds

from .backend import ArchiveBackend
from .config import ArchiveConfig

__all__ = ["PLUGIN", "ArchiveBackend", "ArchiveConfig"]


def build(config: ArchiveConfig, context: BuildContext) -> ArchiveBackend:
    return ArchiveBackend(config)


def sandbox_needs(config: ArchiveConfig) -> SandboxNeeds:
    """Under `vfsframe serve`'s sandbox: compressed members reopen the archive by its path
    (one decompressing stream per open file), so the archive stays readable; nothing else."""
    return SandboxNeeds(read_only=(config.path,))


PLUGIN = PluginType(
    name="archive",
    kind="backend",
    config=ArchiveConfig,
    build=build,
    summary="The contents of a tar (plain, gz, bz2, xz) or zip archive, read-only.",
    sandbox_needs=sandbox_needs,
)
