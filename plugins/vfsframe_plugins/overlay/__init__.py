"""The built-in `overlay` backend: read-only lower layers under a writable upper layer, each
layer a nested backend (with middleware of its own), merged like Linux overlayfs."""

from __future__ import annotations

from vfsframe.config.models import layer_parts
from vfsframe.plugin import BuildContext, PluginType
from vfsframe.sandbox import no_sandbox_needs

from .backend import OverlayBackend, OverlayFile
from .config import OverlayConfig

__all__ = ["PLUGIN", "OverlayBackend", "OverlayConfig", "OverlayFile"]


def build(config: OverlayConfig, context: BuildContext) -> OverlayBackend:
    lower = [context.build_chain(*layer_parts(layer)) for layer in config.lower]
    upper = context.build_chain(*layer_parts(config.upper)) if config.upper is not None else None
    return OverlayBackend(lower, upper)


PLUGIN = PluginType(
    name="overlay",
    kind="backend",
    config=OverlayConfig,
    build=build,
    sandbox_needs=no_sandbox_needs,
    summary="Read-only lower layers under a writable upper (overlayfs semantics, OCI whiteouts).",
)
