"""The `memory` backend's config model."""

from __future__ import annotations

from typing import Literal

from pydantic import ByteSize, ConfigDict, Field

from vfsframe.plugin import PluginConfig


class MemoryConfig(PluginConfig):
    """A POSIX filesystem held in this process's RAM; it is empty at start and gone at exit."""

    # Shown in docs/config-reference.md and the JSON Schema.
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"type": "memory", "capacity": "512MiB"}]}
    )

    type: Literal["memory"] = "memory"
    capacity: ByteSize = Field(
        default="1GiB",
        validate_default=True,  # the schema shows "1GiB"; the value is still a ByteSize
        description=(
            "Most file data the share may hold, e.g. '512MiB' or '2GB'. Writes, fallocate and "
            "copy_file_range that would exceed it fail with ENOSPC; statfs reports it as the "
            "size of the filesystem. Holes in sparse files cost nothing."
        ),
    )
    max_inodes: int = Field(
        default=1_000_000,
        ge=1,
        description=(
            "Most files, directories, symlinks and special nodes that may exist at once "
            "(the root counts as one); creating more fails with ENOSPC."
        ),
    )
