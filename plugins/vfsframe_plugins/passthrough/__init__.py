"""The built-in `passthrough` backend: a host directory, sandboxed below its root."""

from __future__ import annotations

from vfsframe.plugin import BuildContext, PluginType

from .backend import PassthroughBackend
from .config import PassthroughConfig

__all__ = ["PLUGIN", "PassthroughBackend", "PassthroughConfig"]


def build(config: PassthroughConfig, context: BuildContext) -> PassthroughBackend:
    return PassthroughBackend(config)


PLUGIN = PluginType(
    name="passthrough",
    kind="backend",
    config=PassthroughConfig,
    build=build,
    summary="A host directory, never resolved outside its root; zero-copy reads and writes.",
)
