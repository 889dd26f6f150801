"""The kit's pytest plugin (entry point ``pytest11``): layers become parameters, and checks
that do not apply are deselected at collection and reported, never run and never passed."""

from __future__ import annotations

from collections import defaultdict

import pytest

from vfsframe.testing.conformance.suite import BackendConformance

_NOT_APPLICABLE = pytest.StashKey[dict[tuple[str, str], list[str]]]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "vfsframe_requires(*capabilities): a conformance check's needs"
    )
    config.addinivalue_line(
        "markers", "vfsframe_layers(*layers, reason): the layers a conformance check runs on"
    )
    config.stash[_NOT_APPLICABLE] = defaultdict(list)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    cls = metafunc.cls
    if cls is not None and issubclass(cls, BackendConformance) and "vfs" in metafunc.fixturenames:
        metafunc.parametrize("vfs_layer", cls.layers, ids=cls.layers)


def _why_not(item: pytest.Item) -> str | None:
    """Why ``item`` does not apply to its class's backend, or None if it does."""
    cls = getattr(item, "cls", None)
    if cls is None or not issubclass(cls, BackendConformance):
        return None
    missing = [
        name
        for mark in item.iter_markers("vfsframe_requires")
        for name in mark.args
        if not cls.capabilities.has(name)
    ]
    if "writable" in missing:  # the one reason that matters for a read-only backend
        return "needs writable (the backend is read-only)"
    if missing == ["read_only"]:
        return "needs read_only (the backend is writable)"
    if missing:
        return "needs " + ", ".join(missing)
    layer = getattr(item, "callspec", None) and item.callspec.params.get("vfs_layer")
    for mark in item.iter_markers("vfsframe_layers"):
        if layer not in mark.args:
            return f"not on the {layer} layer ({mark.kwargs.get('reason', '')})"
    return None


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    keep, drop = [], []
    for item in items:
        reason = _why_not(item)
        if reason is None:
            keep.append(item)
        else:
            drop.append(item)
            key = (item.cls.__name__, reason)  # type: ignore[union-attr]
            config.stash[_NOT_APPLICABLE][key].append(item.nodeid)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    not_applicable = terminalreporter.config.stash.get(_NOT_APPLICABLE, {})
    if not not_applicable:
        return
    count = sum(len(ids) for ids in not_applicable.values())
    terminalreporter.section(f"vfsframe conformance: {count} checks not applicable (deselected)")
    verbose = terminalreporter.config.getoption("verbose") > 0
    by_class: dict[str, list[tuple[str, list[str]]]] = defaultdict(list)
    for (cls, reason), ids in sorted(not_applicable.items()):
        by_class[cls].append((reason, ids))
    for cls, reasons in by_class.items():
        terminalreporter.line(f"{cls}: {sum(len(ids) for _r, ids in reasons)}")
        for reason, ids in reasons:
            checks = sorted({nodeid.split("::")[-1].split("[")[0] for nodeid in ids})
            terminalreporter.line(
                f"  {reason}: {', '.join(c.removeprefix('test_') for c in checks)}"
            )
            if verbose:
                for nodeid in ids:
                    terminalreporter.line(f"      {nodeid}")
