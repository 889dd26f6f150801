"""What a plugin needs from the sandbox, and the sum of it over a share's config tree.

A plugin type declares ``sandbox_needs(config) -> SandboxNeeds`` on its ``PluginType``: the
host paths it opens while serving (read-write or read-only), whether it talks to the
network, the capabilities it uses and any system calls beyond the common file-server set.
Nested configs (overlay layers, a layer's middleware) are walked here, so a composite
plugin declares only what it needs itself.

A plugin type that declares nothing cannot be sandboxed: serving it with ``sandbox =
"namespace"`` or ``"chroot"`` is refused before start, naming the plugin (its paths would
be missing in the sandbox, and its failures would look like bugs).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vfsframe.plugin import PluginConfig, PluginRegistry, default_registry


@dataclass(frozen=True)
class SandboxNeeds:
    """What serving one plugin needs inside the sandbox."""

    #: Host paths the plugin opens for reading and writing while it serves.
    read_write: tuple[Path, ...] = ()
    #: Host paths the plugin only reads while it serves.
    read_only: tuple[Path, ...] = ()
    #: It opens network connections while serving (keeps the host network namespace).
    network: bool = False
    #: Capability names (``"CAP_CHOWN"``) it needs while serving.
    capabilities: frozenset[str] = frozenset()
    #: System call names it makes beyond the common file-server allow-list.
    syscalls: frozenset[str] = frozenset()

    def __or__(self, other: SandboxNeeds) -> SandboxNeeds:
        return SandboxNeeds(
            _unique(self.read_write + other.read_write),
            _unique(self.read_only + other.read_only),
            self.network or other.network,
            self.capabilities | other.capabilities,
            self.syscalls | other.syscalls,
        )


def no_sandbox_needs(config: Any) -> SandboxNeeds:
    """For plugin types that need nothing from the host once built (memory, acl, ...)."""
    return SandboxNeeds()


class UndeclaredNeeds(ValueError):
    """A plugin in the config does not declare its sandbox needs."""


def _unique(paths: Iterable[Path]) -> tuple[Path, ...]:
    return tuple(dict.fromkeys(Path(p) for p in paths))


@dataclass
class _Walk:
    registry: PluginRegistry
    undeclared: list[str] = field(default_factory=list)

    def needs(self, config: Any) -> SandboxNeeds:
        total = SandboxNeeds()
        for plugin_config in _plugin_configs(config):
            kind_table = {**self.registry.middleware, **self.registry.backends}
            plugin_type = kind_table.get(plugin_config.type)
            declare = getattr(plugin_type, "sandbox_needs", None)
            if declare is None:
                self.undeclared.append(plugin_config.type)
                continue
            total = total | declare(plugin_config)
        return total


def _plugin_configs(value: Any) -> Iterator[PluginConfig]:
    """Every plugin config in ``value`` (a share, a plugin config, a layer), depth first."""
    if isinstance(value, PluginConfig):
        yield value
    if isinstance(value, list | tuple):
        for item in value:
            yield from _plugin_configs(item)
        return
    fields = getattr(type(value), "model_fields", None)
    if fields is None:
        return
    for name in fields:
        child = getattr(value, name)
        if isinstance(child, PluginConfig | list | tuple) or hasattr(type(child), "model_fields"):
            yield from _plugin_configs(child)


def share_needs(shares: Iterable[Any], registry: PluginRegistry | None = None) -> SandboxNeeds:
    """The needs of every plugin in ``shares``; ``UndeclaredNeeds`` names the plugin types
    that declare none."""
    walk = _Walk(registry or default_registry())
    total = SandboxNeeds()
    for share in shares:
        total = total | walk.needs(share)
    if walk.undeclared:
        names = ", ".join(sorted(set(walk.undeclared)))
        raise UndeclaredNeeds(
            f"plugin type(s) {names} declare no sandbox needs (PluginType.sandbox_needs); "
            'serve them with sandbox = "none", or add the declaration (docs/plugin-api.md)'
        )
    return total
