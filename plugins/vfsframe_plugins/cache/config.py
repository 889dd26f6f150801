"""The `cache` middleware's config model."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import ByteSize, ConfigDict, Field, field_validator, model_validator

from vfsframe.plugin import PluginConfig


class CacheConfig(PluginConfig):
    """Attributes, directory listings and file data of a slow backend, kept in this process."""

    # Shown in docs/config-reference.md and the JSON Schema.
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"type": "cache", "memory": "256MiB", "block_size": "1MiB", "attr_ttl": 2.0}
            ]
        }
    )

    type: Literal["cache"] = "cache"
    attr_ttl: float = Field(
        1.0, ge=0, description="Seconds an inode's attributes are answered from the cache."
    )
    dir_ttl: float = Field(
        1.0, ge=0, description="Seconds a directory listing is answered from the cache."
    )
    max_entries: int = Field(
        100_000,
        ge=1,
        description="Most attribute entries kept (least recently used dropped first); at "
        "most a tenth as many directory listings are kept.",
    )
    block_size: ByteSize = Field(
        default="128KiB",
        validate_default=True,
        description="Unit of the data cache and of reads sent to the backend on a miss; a "
        "multiple of 4KiB up to 16MiB.",
    )
    memory: ByteSize = Field(
        default="64MiB",
        validate_default=True,
        description="Most file data kept in RAM (whole blocks, LRU). 0 turns the data cache off.",
    )
    data_ttl: float = Field(
        30.0,
        ge=0,
        description="Seconds a cached block is trusted; changes made behind the cache's back "
        "(not through this share) are seen after at most this long.",
    )
    spill_dir: Path | None = Field(
        None,
        description="Directory for a second tier: blocks evicted from RAM go to an unlinked "
        "file here instead of being dropped.",
    )
    spill_size: ByteSize = Field(
        default="1GiB", validate_default=True, description="Most bytes kept in the spill file."
    )
    readahead: ByteSize = Field(
        default="1MiB",
        validate_default=True,
        description="Extra bytes fetched after a read that continues the previous one on the "
        "same file (sequential access); 0 turns readahead off.",
    )

    @field_validator("block_size")
    @classmethod
    def _block_size(cls, value: ByteSize) -> ByteSize:
        if value % 4096 or not 4096 <= value <= 16 << 20:
            raise ValueError("block_size must be a multiple of 4KiB from 4KiB to 16MiB")
        return value

    @model_validator(mode="after")
    def _budgets(self) -> CacheConfig:
        if self.memory and self.memory < self.block_size:
            raise ValueError("memory must hold at least one block (or be 0 to turn it off)")
        if self.spill_dir is not None and self.spill_size < self.block_size:
            raise ValueError("spill_size must hold at least one block")
        return self
