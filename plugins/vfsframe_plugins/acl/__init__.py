"""The built-in `acl` middleware: path rules that allow, deny or hide; read-only shares."""

from __future__ import annotations

from vfsframe.plugin import BuildContext, PluginType
from vfsframe.sandbox import no_sandbox_needs

from .config import AclConfig, AclRule
from .middleware import AclMiddleware

__all__ = ["PLUGIN", "AclConfig", "AclMiddleware", "AclRule"]


def build(config: AclConfig, context: BuildContext) -> AclMiddleware:
    return AclMiddleware(config)


PLUGIN = PluginType(
    name="acl",
    kind="middleware",
    config=AclConfig,
    build=build,
    sandbox_needs=no_sandbox_needs,
    summary="Allow, deny (EACCES) or hide (ENOENT) by path glob, uid/gid and op class; read-only.",
)
