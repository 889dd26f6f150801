"""The built-in `metrics` middleware: Prometheus metrics per share, and `vfsframe stats`."""

from __future__ import annotations

from vfsframe.plugin import BuildContext, PluginType
from vfsframe.sandbox import no_sandbox_needs

from .config import MetricsConfig
from .middleware import MetricsMiddleware

__all__ = ["PLUGIN", "MetricsConfig", "MetricsMiddleware"]


def build(config: MetricsConfig, context: BuildContext) -> MetricsMiddleware:
    return MetricsMiddleware(config)


PLUGIN = PluginType(
    name="metrics",
    kind="middleware",
    config=MetricsConfig,
    build=build,
    sandbox_needs=no_sandbox_needs,
    summary="Per-op counters, latency histograms, bytes and errors over Prometheus HTTP.",
)
