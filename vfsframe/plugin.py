"""What a plugin package provides, and how vfsframe finds plugins.

A plugin package exposes, through the ``vfsframe.plugins`` entry-point group, one
``PluginType`` (or a list of them). Each names a config ``type``, says whether it is a
backend or a middleware, carries its pydantic config model and a ``build`` function that
turns a validated config into the object registered in the share's pluggy chain. The
built-in plugins are found exactly this way.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

from vfsframe.hookspecs import OPERATIONS

if TYPE_CHECKING:
    from vfsframe.chain import ShareChain

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "vfsframe.plugins"


class PluginConfig(BaseModel):
    """Base of every plugin's config model. Subclasses declare ``type: Literal["name"]`` and
    their options, each with a ``description`` (it becomes the docs and the JSON Schema)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class BuildContext:
    """Handed to ``PluginType.build``; composite backends build their children with it."""

    def __init__(self, build_chain: Callable[[Any, Iterable[Any]], ShareChain]) -> None:
        self._build_chain = build_chain

    def build_chain(self, backend: Any, middleware: Iterable[Any] = ()) -> ShareChain:
        """A complete child filesystem from a nested backend config and its middleware."""
        return self._build_chain(backend, middleware)


@dataclass(frozen=True)
class PluginType:
    name: str
    kind: Literal["backend", "middleware"]
    config: type[PluginConfig]
    build: Callable[[Any, BuildContext], object]
    summary: str = ""
    # Where it came from: the distribution and entry point, for `vfsframe plugins`.
    origin: str = ""
    #: ``sandbox_needs(config) -> vfsframe.sandbox.SandboxNeeds``: the host paths, network,
    #: capabilities and system calls a built plugin uses while serving. None: undeclared, and
    #: `vfsframe serve` refuses to sandbox it (docs/plugin-api.md, "The sandbox").
    sandbox_needs: Callable[[Any], Any] | None = None


def _not_supported(op: str) -> Callable[..., Any]:
    def unsupported(self: Backend, req: Any) -> Any:
        raise OSError(errno.ENOSYS, f"{type(self).__name__} does not implement {op}")

    unsupported.__name__ = f"vfs_{op}"
    return unsupported


class Backend:
    """Base for backends: every hook raises ENOSYS until the subclass implements it.

    Capabilities the session negotiates with the kernel are class attributes.
    """

    #: POSIX record locks (GETLK/SETLK/SETLKW) are implemented and should be negotiated.
    posix_locks: bool = False
    #: BSD flock(2) locks are implemented through vfs_setlk(flock=True).
    flock_locks: bool = False

    def start(self) -> None:
        """Serving begins: start threads here, never while building (see ShareChain.start)."""

    def close(self) -> None:
        """Release resources when the share shuts down."""


for _op in OPERATIONS:
    setattr(Backend, f"vfs_{_op}", _not_supported(_op))


class Middleware:
    """Base for middleware: implement ``@hookimpl(wrapper=True)`` methods for what you wrap."""

    def start(self) -> None:
        """Serving begins: start threads here, never while building (see ShareChain.start)."""

    def close(self) -> None:
        """Release resources when the share shuts down."""


class PluginRegistry:
    """The plugin types installed: a name → PluginType table for backends and middleware."""

    def __init__(self, types: Iterable[PluginType] = ()) -> None:
        self.backends: dict[str, PluginType] = {}
        self.middleware: dict[str, PluginType] = {}
        self.broken: dict[str, str] = {}  # entry point name → why it failed to load
        for plugin_type in types:
            self.add(plugin_type)

    def add(self, plugin_type: PluginType) -> None:
        table = self.backends if plugin_type.kind == "backend" else self.middleware
        if plugin_type.name in table:
            raise ValueError(
                f"two {plugin_type.kind} plugins are named {plugin_type.name!r}: "
                f"{table[plugin_type.name].origin} and {plugin_type.origin}"
            )
        table[plugin_type.name] = plugin_type

    @classmethod
    def discover(cls) -> PluginRegistry:
        """Every plugin installed in this Python environment."""
        registry = cls()
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            origin = f"{ep.dist.name if ep.dist else '?'}:{ep.name}"
            try:
                loaded = ep.load()
                found = loaded if isinstance(loaded, list | tuple) else [loaded]
                for plugin_type in found:
                    if not isinstance(plugin_type, PluginType):
                        raise TypeError(f"{ep.value} is not a vfsframe.plugin.PluginType")
                    registry.add(_with_origin(plugin_type, origin))
            except Exception as exc:  # a broken third-party package must not stop the rest
                log.warning("plugin %s failed to load: %s", origin, exc)
                registry.broken[origin] = str(exc)
        return registry


def _with_origin(plugin_type: PluginType, origin: str) -> PluginType:
    if plugin_type.origin:
        return plugin_type
    return dataclasses.replace(plugin_type, origin=origin)


_default_registry: PluginRegistry | None = None


def default_registry() -> PluginRegistry:
    """The installed plugins, discovered once per process."""
    global _default_registry
    if _default_registry is None:
        _default_registry = PluginRegistry.discover()
    return _default_registry
