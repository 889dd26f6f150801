"""Turning validated config into running objects: plugin chains and FUSE sessions."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from vfsframe.chain import ShareChain
from vfsframe.plugin import BuildContext, PluginRegistry, default_registry
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
    """The resolved chain of a share, outermost first, for `vfsframe check`."""
    lines = [
        f"{index}. middleware {m.type}: {_options(m)}"
        for index, m in enumerate(share.middleware, 1)
    ]
    lines.append(f"{len(lines) + 1}. backend {share.backend.type}: {_options(share.backend)}")
    return lines


def _options(model: Any) -> str:
    values = model.model_dump(exclude={"type"}, mode="json")
    return ", ".join(f"{key}={value!r}" for key, value in values.items()) or "(defaults)"


def session_options(share: Any) -> SessionOptions:
    return SessionOptions(cache=share.cache, writeback_cache=share.writeback_cache, name=share.tag)


def build_session(share: Any, registry: PluginRegistry | None = None) -> FuseSession:
    """The FUSE session serving one share config."""
    chain = build_chain(share.backend, share.middleware, registry)
    return FuseSession(chain, session_options(share))
