"""The `objectstore` backend's config model.

``store`` is a sub-table whose ``type`` picks the store: the built-in `local` and `s3`, or any
store installed in the ``vfsframe.objectstores`` entry-point group. Its options are that
store's own config model, so they are validated (with their field paths) and documented in
the JSON Schema like everything else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BeforeValidator, ByteSize, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from vfsframe.plugin import PluginConfig

from .store import StoreType, discover_store_types

STORE_TYPES: dict[str, StoreType] = discover_store_types()


def _known_store(value: Any) -> Any:
    # Said here, so the message lists stores rather than the share's backend types.
    if isinstance(value, dict):
        name = value.get("type")
        if name is None:
            raise PydanticCustomError("store_type_missing", "missing 'type' (which store to use)")
        if name not in STORE_TYPES:
            raise PydanticCustomError(
                "unknown_store",
                "unknown store type '{name}'; installed: {known} (more come from packages "
                "in the vfsframe.objectstores entry-point group)",
                {"name": name, "known": ", ".join(STORE_TYPES)},
            )
    return value


StoreConfigUnion = Annotated[
    Union[tuple(t.config for t in STORE_TYPES.values())],  # noqa: UP007
    Field(discriminator="type"),
    BeforeValidator(_known_store),
]


class ObjectStoreConfig(PluginConfig):
    """A bucket seen as a directory tree (see docs/backends/objectstore.md)."""

    # Shown in docs/config-reference.md and the JSON Schema.
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "objectstore",
                    "store": {"type": "local", "root": "/srv/vfsframe/objects"},
                },
                {
                    "type": "objectstore",
                    "store": {
                        "type": "s3",
                        "bucket": "team-data",
                        "endpoint_url": "http://127.0.0.1:9000",
                        "addressing_style": "path",
                    },
                    "readahead": "16MiB",
                },
            ]
        }
    )

    type: Literal["objectstore"] = "objectstore"
    store: StoreConfigUnion = Field(  # type: ignore[valid-type]
        description='Where the objects live: `{ type = "local", root = "/srv/objects" }` '
        'or `{ type = "s3", bucket = "...", endpoint_url = "..." }`, or a third-party '
        "store's type.",
    )
    part_size: ByteSize = Field(
        default="8MiB",
        validate_default=True,
        description="Part size of multipart uploads. S3 needs at least 5MiB and allows 10,000 "
        "parts, so the largest file is 10,000 x part_size.",
    )
    multipart_threshold: ByteSize = Field(
        default="8MiB",
        validate_default=True,
        description="Files at least this large are uploaded in parts, in parallel.",
    )
    upload_concurrency: int = Field(
        4, ge=1, le=64, description="Parts uploaded (and objects copied by a rename) at once."
    )
    readahead: ByteSize = Field(
        default="8MiB",
        validate_default=True,
        description="Largest ranged GET of a sequential reader; the window doubles from the "
        "first read's size up to this, and two windows are fetched ahead. 0 turns readahead "
        "off (one GET per read).",
    )
    list_page_size: int = Field(
        1000, ge=1, le=1000, description="Keys per listing request (S3 returns at most 1000)."
    )
    listing_attributes: Literal["head", "listing"] = Field(
        "head",
        description="Where directory listings take attributes from. 'head': a listing "
        "carries no user metadata, so objects not seen before are HEADed (16 at once) and "
        "entries carry their real mode, owner and mtime. 'listing': size and last-modified "
        "from the listing, mode and owner from the defaults below, no HEAD (fast for buckets "
        "written by other tools; a stat still HEADs and sees the real attributes).",
    )
    staging_dir: Path | None = Field(
        None,
        description="Host directory for the write-back staging files of files open for "
        "writing (unnamed temp files). Default: the system temp directory. It needs room for "
        "every file being written at once.",
    )
    uid: int | None = Field(
        None, ge=0, description="Owner of objects without vfsframe metadata. Default: the server's."
    )
    gid: int | None = Field(
        None, ge=0, description="Group of objects without vfsframe metadata. Default: the server's."
    )
    file_mode: int = Field(
        0o644, ge=0, le=0o7777, description="Permission bits of files without metadata."
    )
    dir_mode: int = Field(
        0o755, ge=0, le=0o7777, description="Permission bits of directories without metadata."
    )
    check_at_start: bool = Field(
        True,
        description="Probe the store when the share is built (bucket exists, credentials "
        "work, root writable) and refuse to start with a clear message otherwise.",
    )

    @model_validator(mode="after")
    def _parts_fit_the_store(self) -> ObjectStoreConfig:
        store_type = STORE_TYPES[self.store.type]
        if self.part_size < store_type.min_part_size:
            raise ValueError(
                f"part_size: {self.part_size.human_readable()} is below the "
                f"{store_type.name} store's minimum part of {store_type.min_part_size} bytes"
            )
        if self.multipart_threshold < self.part_size:
            raise ValueError(
                "multipart_threshold: must be at least part_size (a smaller file is one part)"
            )
        return self

    @property
    def store_type(self) -> StoreType:
        return STORE_TYPES[self.store.type]

    @property
    def needs_network(self) -> bool:
        """Whether serving this share talks to the network (for a sandbox)."""
        return bool(self.store_type.needs_network(self.store))

    @property
    def host_paths(self) -> tuple[str, ...]:
        """Host paths the share reads and writes (for a sandbox)."""
        staging = (str(self.staging_dir),) if self.staging_dir is not None else ()
        return tuple(self.store_type.host_paths(self.store)) + staging


def store_options(config: ObjectStoreConfig) -> dict[str, Any]:
    """The store's options without secrets, for logs."""
    return config.store.model_dump(mode="json", exclude={"secret_access_key", "session_token"})
