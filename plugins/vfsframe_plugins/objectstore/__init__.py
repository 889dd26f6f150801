"""The built-in `objectstore` backend: a bucket (S3, or a local directory) as a directory tree.

Stores are pluggable: see ``store.ObjectStore`` and the ``vfsframe.objectstores`` entry-point
group. Semantics and options: docs/backends/objectstore.md.
"""

from __future__ import annotations

import logging
from pathlib import Path

from vfsframe.plugin import BuildContext, PluginType
from vfsframe.sandbox import SandboxNeeds

# The store interface comes first: importing .config discovers the installed stores, and a
# store package imports these names from this package while that happens.
from .store import (
    ListPage,
    ObjectInfo,
    ObjectReader,
    ObjectStore,
    Part,
    StaleObjectError,
    StoreConfig,
    StoreType,
)

# isort: split
from .backend import ObjectStoreBackend
from .config import STORE_TYPES, ObjectStoreConfig, store_options

__all__ = [
    "PLUGIN",
    "STORE_TYPES",
    "ListPage",
    "ObjectInfo",
    "ObjectReader",
    "ObjectStore",
    "ObjectStoreBackend",
    "ObjectStoreConfig",
    "Part",
    "StaleObjectError",
    "StoreConfig",
    "StoreType",
    "open_store",
]

log = logging.getLogger(__name__)


def open_store(config: ObjectStoreConfig) -> ObjectStore:
    """The configured store, probed when ``check_at_start`` (a failure says what to fix)."""
    store = config.store_type.open(config.store)
    if config.check_at_start:
        try:
            store.check()
        except BaseException:
            store.close()
            raise
    return store


def build(config: ObjectStoreConfig, context: BuildContext) -> ObjectStoreBackend:
    store = open_store(config)
    log.info("objectstore: %s store %s", config.store.type, store_options(config))
    return ObjectStoreBackend(config, store)


def sandbox_needs(config: ObjectStoreConfig) -> SandboxNeeds:
    """The store's directory (local) or the network (s3), and the staging directory."""
    return SandboxNeeds(
        read_write=tuple(Path(p) for p in config.host_paths), network=config.needs_network
    )


PLUGIN = PluginType(
    name="objectstore",
    kind="backend",
    config=ObjectStoreConfig,
    build=build,
    sandbox_needs=sandbox_needs,
    summary="A bucket as a directory tree: local directory store or any S3 endpoint; "
    "write-back staging, multipart uploads, close-to-open consistency.",
)
