"""The `overlay` backend's config model."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from vfsframe.config.models import NestedLayer
from vfsframe.plugin import PluginConfig


class OverlayConfig(PluginConfig):
    """Read-only lower layers under an optional writable upper layer, merged like Linux
    overlayfs. Each layer is a full nested backend config, optionally with its own
    middleware: ``{ backend = {...}, middleware = [...] }``."""

    # The nested unions are those of the registry the config models are built for.
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    type: Literal["overlay"] = "overlay"
    lower: list[NestedLayer] = Field(
        min_length=1,
        description=(
            "The read-only layers, topmost first. Each is a backend table "
            "(`{ type = 'passthrough', root = '/srv/base' }`) or a backend with middleware "
            "(`{ backend = {...}, middleware = [...] }`). Whiteouts written in the OCI "
            "convention (`.wh.NAME`, `.wh..wh..opq`) or as overlayfs 0/0 character devices "
            "are honoured, so unpacked image layers can be used as they are."
        ),
    )
    upper: NestedLayer | None = Field(
        None,
        description=(
            "The writable layer (same forms as `lower`). Changes land here: copies of lower "
            "files, new files, and `.wh.` whiteout files for deletions. Without it the "
            "overlay is read-only and every change fails with EROFS."
        ),
    )
