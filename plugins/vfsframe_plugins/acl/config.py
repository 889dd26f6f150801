"""The `acl` middleware's config model."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from vfsframe.plugin import PluginConfig
from vfsframe_plugins._opclasses import OpClass

from .pathglob import GlobError, compile_glob

Effect = Literal["allow", "deny", "hide"]


class AclRule(BaseModel):
    """One rule: it applies when the path, the caller's ids and the op class all match."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(
        description="Glob over share paths: '*' and '?' within a component, '[...]' classes, "
        "'**' as a whole component for any depth ('/a/**' matches '/a' and all beneath it)."
    )
    uids: list[int] | None = Field(
        None, description="Only callers with one of these uids (as the kernel reports them)."
    )
    gids: list[int] | None = Field(
        None,
        description="Only callers with one of these primary gids (FUSE does not carry "
        "supplementary groups).",
    )
    ops: list[OpClass] | None = Field(
        None,
        description="Only these op classes: read, write, create, delete, rename, setattr, "
        "xattr, list. Absent: every class.",
    )
    effect: Effect = Field(
        description="allow; deny (EACCES); hide (ENOENT on lookup and for every covered "
        "operation, and absent from directory listings)."
    )

    @field_validator("path")
    @classmethod
    def _valid_glob(cls, value: str) -> str:
        try:
            compile_glob(value)
        except GlobError as exc:
            raise ValueError(str(exc)) from None
        return value


class AclConfig(PluginConfig):
    """Access rules over share paths, callers and op classes; the first matching rule wins."""

    # Shown in docs/config-reference.md and the JSON Schema.
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "acl",
                    "default": "allow",
                    "rules": [
                        {"path": "/secrets/**", "uids": [0], "effect": "allow"},
                        {"path": "/secrets/**", "effect": "hide"},
                    ],
                }
            ]
        }
    )

    type: Literal["acl"] = "acl"
    rules: list[AclRule] = Field(
        default_factory=list, description="Rules in order; the first that matches decides."
    )
    default: Effect = Field("allow", description="The effect when no rule matches.")
    readonly: bool = Field(
        False,
        description="Refuse every operation that could change the share with EROFS "
        "(checked before the rules).",
    )
