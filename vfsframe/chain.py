"""A share's chain: one backend and its middleware in a pluggy PluginManager of their own."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import pluggy

from vfsframe.hookspecs import OPERATIONS, PROJECT, ShareSpec


class _ChainPluginManager(pluggy.PluginManager):
    """Takes unmarked ``vfs_*`` methods as plain implementations (as pytest does with
    ``pytest_*``), so a backend author writes ordinary methods."""

    def parse_hookimpl_opts(self, plugin: object, name: str) -> Any:
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name.startswith("vfs_"):
            method = getattr(plugin, name, None)
            if inspect.isroutine(method):
                return {}
        return opts


class ShareChain:
    """Calls an operation through the middleware (first given = outermost) into the backend.

    After construction every operation is an attribute: ``chain.getattr(req)``,
    ``chain.read(req)``, ... (see ``vfsframe.hookspecs``).
    """

    getattr: Callable[[Any], Any]  # and one such attribute per operation

    def __init__(self, backend: object, middleware: Sequence[object] = ()) -> None:
        self.backend = backend
        self.middleware = list(middleware)
        self.plugin_manager = _ChainPluginManager(PROJECT)
        self.plugin_manager.add_hookspecs(ShareSpec)
        self.plugin_manager.register(backend, name="backend")
        # pluggy calls the most recently registered wrapper first, so register the
        # outermost (first listed) last.
        for index in reversed(range(len(self.middleware))):
            self.plugin_manager.register(self.middleware[index], name=f"middleware[{index}]")
        self.plugin_manager.check_pending()
        self._started = False
        for op in OPERATIONS:
            setattr(self, op, _bind(getattr(self.plugin_manager.hook, f"vfs_{op}")))

    def capability(self, name: str) -> bool:
        """A backend capability (e.g. ``posix_locks``); middleware may mask it by defining
        the same attribute as False."""
        if not getattr(self.backend, name, False):
            return False
        return all(getattr(mw, name, True) for mw in self.middleware)

    def start(self) -> None:
        """Serving begins (once; later calls do nothing): each plugin's ``start()``, backend
        first. A plugin starts its threads here, not while it is built: `vfsframe serve`
        enters its sandbox between the two, and capabilities are dropped per thread, so a
        thread started earlier would keep every one (the sandbox refuses to enter then)."""
        if self._started:
            return
        self._started = True
        for plugin in [self.backend, *reversed(self.middleware)]:
            start = getattr(plugin, "start", None)
            if start is not None:
                start()

    def close(self) -> None:
        for plugin in [*self.middleware, self.backend]:
            close = getattr(plugin, "close", None)
            if close is not None:
                close()


def _bind(hook: pluggy.HookCaller) -> Callable[[Any], Any]:
    """The call for one operation. With a single plain implementation (a backend and no
    middleware wrapping this operation, the common case) pluggy's firstresult call reduces
    to calling it, so call it directly: pluggy's generic loop is a third of a small
    request's cost."""
    impls = hook.get_hookimpls()
    if len(impls) == 1 and not (impls[0].wrapper or impls[0].hookwrapper):
        impl = impls[0]
        if impl.argnames == ("req",):
            return impl.function
        if not impl.argnames:
            function = impl.function
            return lambda req: function()

    def call(req: Any) -> Any:
        return hook(req=req)

    return call
