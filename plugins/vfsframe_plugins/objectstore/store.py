"""The object-store interface the `objectstore` backend is written against, and its registry.

A store holds flat keys → (bytes, small string metadata), as S3 does. The backend needs only
the operations below; a store for another service (GCS, Azure Blob, ...) implements them and
registers a ``StoreType`` in the ``vfsframe.objectstores`` entry-point group. The backend never
imports a store module by name.

Errors are ``OSError``: ``FileNotFoundError`` for a missing key, ``StaleObjectError`` when a
read's object changed underneath, ``OSError(EIO)`` (or a more precise errno such as EACCES)
for everything the service refused or could not be reached for. The backend passes them on.
"""

from __future__ import annotations

import errno
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, BinaryIO

from pydantic import BaseModel, ConfigDict

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "vfsframe.objectstores"


class StaleObjectError(OSError):
    """The object changed (another writer replaced it) while it was being read."""

    def __init__(self, key: str) -> None:
        super().__init__(errno.ESTALE, "object changed while it was being read", key)


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What HEAD (or a listing) says about an object. ``metadata`` is None when the source
    (a listing) does not carry it; ``version`` is an opaque token that changes whenever the
    object's bytes or metadata are replaced (ETag + last-modified for S3)."""

    key: str
    size: int
    mtime_ns: int
    version: str
    metadata: dict[str, str] | None = None


@dataclass(slots=True)
class ListPage:
    """One page of a listing: objects and (with a delimiter) common prefixes, in key order.
    ``token`` continues the listing; None on the last page."""

    objects: list[ObjectInfo] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)
    token: str | None = None


@dataclass(frozen=True, slots=True)
class Part:
    number: int  # 1-based, as S3
    etag: str


class ObjectReader(ABC):
    """Ranged reads of one version of one object (what a file handle reads from)."""

    size: int

    @abstractmethod
    def read_into(self, offset: int, buffers: Sequence[memoryview]) -> int:
        """Fill ``buffers`` from ``offset`` (one ranged GET); return the bytes written,
        short only at the end of the object. StaleObjectError if the version is gone."""

    def close(self) -> None:  # noqa: B027  (optional for readers that hold nothing)
        """Release what the reader holds (an fd, a connection)."""


class ObjectStore(ABC):
    """A bucket (or a prefix of one). Every method may be called from several threads."""

    #: The store talks to a service over the network (a sandbox must allow it).
    needs_network: bool = False
    #: Host paths the store reads and writes (a sandbox must expose them).
    host_paths: tuple[str, ...] = ()
    #: Most bytes of user metadata (names + values) one object may carry.
    metadata_limit: int = 2048
    #: Smallest part of a multipart upload other than the last; most parts of one upload.
    min_part_size: int = 5 << 20
    max_parts: int = 10_000

    def check(self) -> None:  # noqa: B027  (optional: not every store can probe)
        """Verify at start that the store is reachable and usable (bucket exists,
        credentials work); raise OSError with a message that says what to fix."""

    @abstractmethod
    def head(self, key: str) -> ObjectInfo:
        """The object's size, version and metadata; FileNotFoundError if absent."""

    @abstractmethod
    def open_reader(self, key: str, info: ObjectInfo | None = None) -> ObjectReader:
        """A reader of the object's current version (``info`` saves a HEAD)."""

    def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        """Bytes ``[start, end)`` of the object (to its end when ``end`` is None)."""
        reader = self.open_reader(key)
        try:
            stop = reader.size if end is None else min(end, reader.size)
            buffer = bytearray(max(0, stop - start))
            count = reader.read_into(start, [memoryview(buffer)]) if buffer else 0
            return bytes(buffer[:count])
        finally:
            reader.close()

    @abstractmethod
    def put(self, key: str, data: bytes | BinaryIO, metadata: dict[str, str]) -> ObjectInfo:
        """Store the object whole (a file object is read from its current position to its
        end). Durable when it returns."""

    @abstractmethod
    def create_multipart(self, key: str, metadata: dict[str, str]) -> str:
        """Start a multipart upload; returns its id."""

    @abstractmethod
    def upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> Part:
        """Upload part ``number`` (1-based)."""

    @abstractmethod
    def complete_multipart(self, key: str, upload_id: str, parts: Sequence[Part]) -> ObjectInfo:
        """Assemble the parts into the object; it appears whole, atomically."""

    @abstractmethod
    def abort_multipart(self, key: str, upload_id: str) -> None:
        """Drop an unfinished upload and its parts."""

    @abstractmethod
    def list(
        self, prefix: str, delimiter: str | None = "/", token: str | None = None, limit: int = 1000
    ) -> ListPage:
        """One page of the keys that start with ``prefix``, in key (UTF-8 byte) order. With a
        delimiter, keys with it after the prefix are rolled up into common prefixes."""

    def list_all(self, prefix: str, delimiter: str | None = None) -> Iterator[ListPage]:
        """Every page of a listing."""
        token: str | None = None
        while True:
            page = self.list(prefix, delimiter, token)
            yield page
            if page.token is None:
                return
            token = page.token

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; a missing key is not an error (S3 semantics)."""

    def delete_many(self, keys: Iterable[str]) -> None:
        """Remove many objects (S3 batches them by 1,000)."""
        for key in keys:
            self.delete(key)

    @abstractmethod
    def copy(self, source: str, target: str, metadata: dict[str, str] | None = None) -> ObjectInfo:
        """Server-side copy; with ``metadata`` the copy carries it instead of the source's.
        ``source == target`` with new metadata is how metadata changes in place."""

    def close(self) -> None:  # noqa: B027  (optional)
        """Release connections and files."""


class StoreConfig(BaseModel):
    """Base of a store's config model: declare ``type: Literal["name"]`` and the options,
    each with a description (they are part of the backend's JSON Schema)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class StoreType:
    """What a store package registers in the ``vfsframe.objectstores`` entry-point group.

    ``needs_network`` and ``host_paths`` answer before the store is opened (a sandbox is set
    up from the config); ``open`` builds the store from its validated config."""

    name: str
    config: type[StoreConfig]
    open: Callable[[Any], ObjectStore]
    needs_network: Callable[[Any], bool] = lambda config: False
    host_paths: Callable[[Any], tuple[str, ...]] = lambda config: ()
    #: Parts smaller than this (other than the last) are refused by the service.
    min_part_size: int = 1
    summary: str = ""
    origin: str = "builtin"


def _builtin_types() -> list[StoreType]:
    from .local import LOCAL_STORE
    from .s3 import S3_STORE

    return [LOCAL_STORE, S3_STORE]


def discover_store_types() -> dict[str, StoreType]:
    """The built-in stores and every store installed under the entry-point group."""
    found = {t.name: t for t in _builtin_types()}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        origin = f"{ep.dist.name if ep.dist else '?'}:{ep.name}"
        try:
            store_type = ep.load()
            if not isinstance(store_type, StoreType):
                raise TypeError(f"{ep.value} is not a vfsframe_plugins.objectstore.StoreType")
        except Exception as exc:  # one broken package must not take the backend down
            log.warning("object store %s failed to load: %s", origin, exc)
            continue
        if store_type.name in found:
            log.warning(
                "object store %s: the name %r is taken by %s; ignored",
                origin,
                store_type.name,
                found[store_type.name].origin,
            )
            continue
        found[store_type.name] = StoreType(
            store_type.name,
            store_type.config,
            store_type.open,
            store_type.needs_network,
            store_type.host_paths,
            store_type.min_part_size,
            store_type.summary,
            origin,
        )
    return found
