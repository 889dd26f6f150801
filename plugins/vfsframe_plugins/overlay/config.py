"""The `overlay` backend's config model."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from vfsframe.config.models import NestedLayer, layer_parts
from vfsframe.plugin import PluginConfig


class OverlayConfig(PluginConfig):
    """Read-only lower layers under an optional writable upper layer, merged like Linux
    overlayfs. Each layer is a full nested backend config, optionally with its own
    middleware: ``{ backend = {...}, middleware = [...] }``."""

    # The nested unions are those of the registry the config models are built for.
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        defer_build=True,
        json_schema_extra={
            "examples": [
                {
                    "type": "overlay",
                    "lower": [
                        {
                            "type": "passthrough",
                            "root": "/srv/vfsframe/images/debian-12",
                            "readonly": True,
                        }
                    ],
                    "upper": {"type": "passthrough", "root": "/srv/vfsframe/guests/vm1"},
                }
            ]
        },
    )

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

    @model_validator(mode="after")
    def _upper_apart_from_lowers(self) -> OverlayConfig:
        # An upper that is (or contains, or lies in) a lower layer's directory would write
        # into that layer: its copies and whiteouts would show up below it.
        if self.upper is None:
            return self
        upper = _root(self.upper)
        if upper is None:
            return self
        for index, layer in enumerate(self.lower):
            lower = _root(layer)
            if lower is not None and (upper.is_relative_to(lower) or lower.is_relative_to(upper)):
                raise ValueError(
                    f"upper root {str(upper)!r} overlaps lower[{index}] root {str(lower)!r}: "
                    "give the upper layer a directory of its own"
                )
        return self


def _root(layer: Any) -> Path | None:
    """The host directory a layer's backend serves, when its config has a ``root``."""
    root = getattr(layer_parts(layer)[0], "root", None)
    return Path(root).resolve() if isinstance(root, str | Path) else None
