"""The built-in `log` middleware: one line per operation (text or JSON Lines)."""

from __future__ import annotations

from vfsframe.plugin import BuildContext, PluginType
from vfsframe.sandbox import no_sandbox_needs

from .config import LogConfig
from .middleware import LogMiddleware

__all__ = ["PLUGIN", "LogConfig", "LogMiddleware"]


def build(config: LogConfig, context: BuildContext) -> LogMiddleware:
    return LogMiddleware(config)


PLUGIN = PluginType(
    name="log",
    kind="middleware",
    config=LogConfig,
    build=build,
    sandbox_needs=no_sandbox_needs,
    summary="One line per operation: op, path, uid/pid, result or errno, latency; text or JSON.",
)
