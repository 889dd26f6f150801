"""The built-in `cache` middleware: attribute, listing and block caches for slow backends."""

from __future__ import annotations

from vfsframe.plugin import BuildContext, PluginType
from vfsframe.sandbox import no_sandbox_needs

from .blocks import BlockCache
from .config import CacheConfig
from .middleware import CacheMiddleware

__all__ = ["PLUGIN", "BlockCache", "CacheConfig", "CacheMiddleware"]


def build(config: CacheConfig, context: BuildContext) -> CacheMiddleware:
    return CacheMiddleware(config)


PLUGIN = PluginType(
    name="cache",
    kind="middleware",
    config=CacheConfig,
    build=build,
    sandbox_needs=no_sandbox_needs,
    summary="Attribute/listing cache with TTL, LRU block cache with spill and readahead.",
)
