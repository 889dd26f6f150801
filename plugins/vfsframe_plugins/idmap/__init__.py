"""The built-in `idmap` middleware: guest ↔ host uid/gid ranges."""

from __future__ import annotations

from vfsframe.plugin import BuildContext, PluginType
from vfsframe.sandbox import no_sandbox_needs

from .config import IdmapConfig, IdRange
from .mapping import IdMapping
from .middleware import IdmapMiddleware

__all__ = ["PLUGIN", "IdMapping", "IdRange", "IdmapConfig", "IdmapMiddleware"]


def build(config: IdmapConfig, context: BuildContext) -> IdmapMiddleware:
    return IdmapMiddleware(config)


PLUGIN = PluginType(
    name="idmap",
    kind="middleware",
    config=IdmapConfig,
    build=build,
    sandbox_needs=no_sandbox_needs,
    summary="Map guest uids/gids to host ids and back, by ranges like user namespaces.",
)
