"""The `archive` backend's config model."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from vfsframe.plugin import PluginConfig


class ArchiveConfig(PluginConfig):
    """A tar or zip archive shared read-only: its members as files, directories and links."""

    type: Literal["archive"] = "archive"
    path: Path = Field(description="The archive file: .tar, .tar.gz, .tar.bz2, .tar.xz or .zip.")
    format: Literal["auto", "tar", "zip"] = Field(
        "auto",
        description="`auto` tells zip from tar (and tar's compression) by the file's first "
        "bytes, not its name.",
    )
    dir_mode: int = Field(
        0o755,
        ge=0,
        le=0o7777,
        description="Permission bits of directories the archive implies but does not list "
        "(a member `a/b/c` implies `a` and `a/b`).",
    )

    @field_validator("path")
    @classmethod
    def _is_a_file(cls, path: Path) -> Path:
        if not path.exists():
            raise ValueError(f"{path} does not exist")
        if not path.is_file():
            raise ValueError(f"{path} is not a regular file")
        return path
