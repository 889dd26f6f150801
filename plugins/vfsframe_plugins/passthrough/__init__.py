"""The built-in `passthrough` backend: a host directory, sandboxed below its root."""

from __future__ import annotations

from vfsframe.plugin import BuildContext, PluginType
from vfsframe.sandbox import SandboxNeeds

from .backend import PassthroughBackend
from .config import PassthroughConfig

__all__ = ["PLUGIN", "PassthroughBackend", "PassthroughConfig"]


def build(config: PassthroughConfig, context: BuildContext) -> PassthroughBackend:
    return PassthroughBackend(config)


# Acting on the guest's behalf on files of any owner (as virtiofsd's default --modcaps;
# not CAP_DAC_READ_SEARCH, which would open files by handle, around the root).
FILE_CAPABILITIES = frozenset({"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID"})


def sandbox_needs(config: PassthroughConfig) -> SandboxNeeds:
    caps = set(FILE_CAPABILITIES)
    if config.preserve_ownership:
        caps |= {"CAP_SETUID", "CAP_SETGID"}  # setfsuid/setfsgid to the guest caller
    if config.allow_devices:
        caps.add("CAP_MKNOD")
    if config.privileged_xattrs:
        caps.add("CAP_SYS_ADMIN")  # trusted.* and security.* attributes
    root = (config.root,)
    return SandboxNeeds(
        read_write=() if config.readonly else root,
        read_only=root if config.readonly else (),
        capabilities=frozenset(caps),
    )


PLUGIN = PluginType(
    name="passthrough",
    kind="backend",
    config=PassthroughConfig,
    build=build,
    sandbox_needs=sandbox_needs,
    summary="A host directory, never resolved outside its root; zero-copy reads and writes.",
)
