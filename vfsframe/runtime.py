"""Turning validated config into running objects: plugin chains and FUSE sessions."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from vfsframe.chain import ShareChain
from vfsframe.config.models import LayerConfig, layer_parts
from vfsframe.plugin import BuildContext, PluginConfig, PluginRegistry, default_registry
from vfsframe.session import FuseSession, SessionOptions


def build_chain(
    backend: Any, middleware: Iterable[Any] = (), registry: PluginRegistry | None = None
) -> ShareChain:
    """A backend config and its middleware configs, built into one chain."""
    registry = registry or default_registry()
    context = BuildContext(lambda b, m: build_chain(b, m, registry))
    backend_obj = registry.backends[backend.type].build(backend, context)
    middleware_objs = [registry.middleware[m.type].build(m, context) for m in middleware]
    return ShareChain(backend_obj, middleware_objs)


def describe_chain(share: Any) -> list[str]:
    """The resolved chain of a share, outermost first, for `vfsframe check`. A composite
    backend's nested layers (overlay's lower/upper) follow it, indented, as chains of their own."""
    return _describe(share.backend, share.middleware, "")


def _describe(backend: Any, middleware: Iterable[Any], indent: str) -> list[str]:
    lines = [
        f"{indent}{index}. middleware {m.type}: {_options(m)}"
        for index, m in enumerate(middleware, 1)
    ]
    nested = _nested_fields(backend)
    options = _options(backend, exclude=set(nested))
    lines.append(f"{indent}{len(lines) + 1}. backend {backend.type}: {options}")
    for label, layer in (item for items in nested.values() for item in items):
        lines.append(f"{indent}   {label}:")
        lines += _describe(*layer_parts(layer), indent + "     ")
    return lines


def _nested_fields(model: Any) -> dict[str, list[tuple[str, Any]]]:
    """Fields holding nested plugin configs: field name → [(label, config), ...]."""
    found: dict[str, list[tuple[str, Any]]] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, PluginConfig | LayerConfig):
            found[name] = [(name, value)]
        elif (
            isinstance(value, list | tuple)
            and value
            and all(isinstance(item, PluginConfig | LayerConfig) for item in value)
        ):
            found[name] = [(f"{name}[{i}]", item) for i, item in enumerate(value)]
    return found


def _options(model: Any, exclude: set[str] | None = None) -> str:
    values = model.model_dump(exclude={"type", *(exclude or ())}, mode="json")
    return ", ".join(f"{key}={value!r}" for key, value in values.items()) or "(defaults)"


def session_options(share: Any, name: str | None = None) -> SessionOptions:
    return SessionOptions(
        cache=share.cache, writeback_cache=share.writeback_cache, name=name or share.tag
    )


def build_session(share: Any, registry: PluginRegistry | None = None) -> FuseSession:
    """The FUSE session serving one share config."""
    chain = build_chain(share.backend, share.middleware, registry)
    return FuseSession(chain, session_options(share))


def build_guest_sessions(
    share: Any, guests: int, registry: PluginRegistry | None = None
) -> list[FuseSession]:
    """One FUSE session per guest over a single chain of ``share``: each guest's kernel has
    its own node ids and file handles, while every guest reaches the same backend instance
    (one memory tree, one set of host locks). Closing the chain is the caller's, once."""
    chain = build_chain(share.backend, share.middleware, registry)
    if guests == 1:
        return [FuseSession(chain, session_options(share))]
    return [
        FuseSession(chain, session_options(share, f"{share.tag}#{index}"))
        for index in range(guests)
    ]
