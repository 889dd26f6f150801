"""The `log` middleware's config model."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, Field, field_validator

from vfsframe.hookspecs import OPERATIONS
from vfsframe.plugin import PluginConfig
from vfsframe_plugins._opclasses import OP_CLASSES


class LogConfig(PluginConfig):
    """One line per operation: op, path(s), caller, result or errno, latency. Never file data."""

    # Shown in docs/config-reference.md and the JSON Schema.
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"type": "log", "format": "json", "ops": ["write", "delete", "rename"]}]
        }
    )

    type: Literal["log"] = "log"
    format: Literal["text", "json"] = Field(
        "text", description="'text': one readable line per operation; 'json': JSON Lines."
    )
    path: Path | None = Field(
        None, description="File the lines are appended to; absent: the server's stderr."
    )
    ops: list[str] | None = Field(
        None,
        description="Only these operations: hook names (getattr, read, rename, ...) and/or "
        "op classes (read, write, create, delete, rename, setattr, xattr, list). Absent: all.",
    )
    slow_ms: float | None = Field(
        None,
        ge=0,
        description="When set, only operations that took at least this many milliseconds.",
    )

    @field_validator("ops")
    @classmethod
    def _known_ops(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return value
        known = set(OPERATIONS) | set(OP_CLASSES)
        unknown = [name for name in value if name not in known]
        if unknown:
            raise ValueError(
                f"unknown operation or op class {', '.join(map(repr, unknown))}; "
                f"op classes: {', '.join(OP_CLASSES)}; operations: {', '.join(OPERATIONS)}"
            )
        return value
