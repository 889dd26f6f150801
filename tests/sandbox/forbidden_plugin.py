"""Test-only backend: the memory backend, except that a GETATTR of the root first makes a
system call no allow-list holds (personality(0xffffffff), a harmless query). Registered by
`serve_with_forbidden` before the CLI runs; never in the product's plugin registry."""

from __future__ import annotations

import ctypes
import sys
from typing import Literal

from vfsframe_plugins.memory import MemoryBackend, MemoryConfig

from vfsframe import ops
from vfsframe.plugin import BuildContext, PluginType, default_registry
from vfsframe.sandbox import no_sandbox_needs

SYS_PERSONALITY = 135  # x86_64
_libc = ctypes.CDLL(None, use_errno=True)


class ForbiddenConfig(MemoryConfig):
    type: Literal["forbidden-syscall"] = "forbidden-syscall"  # type: ignore[assignment]


class ForbiddenBackend(MemoryBackend):
    def vfs_getattr(self, req: ops.GetattrRequest) -> ops.Attr:
        if req.path == "/":
            _libc.syscall(ctypes.c_long(SYS_PERSONALITY), ctypes.c_ulong(0xFFFFFFFF))
        return super().vfs_getattr(req)


def _build(config: ForbiddenConfig, context: BuildContext) -> ForbiddenBackend:
    return ForbiddenBackend(config)


PLUGIN = PluginType(
    name="forbidden-syscall",
    kind="backend",
    config=ForbiddenConfig,
    build=_build,
    sandbox_needs=no_sandbox_needs,
)


def main() -> int:
    default_registry().add(PLUGIN)
    from vfsframe.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
