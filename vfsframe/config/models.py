"""The server config's pydantic models, built from the installed plugin types.

Each plugin registers a config model under its ``type`` name; a share's ``backend`` is the
discriminated union of every backend model and each ``middleware`` entry the union of every
middleware model. So a third-party plugin's options are validated and exported as JSON
Schema exactly like a built-in one's.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    create_model,
)
from pydantic_core import PydanticCustomError

from vfsframe.plugin import PluginConfig, PluginRegistry, default_registry

CachePolicyName = Literal["none", "auto", "always"]

# virtio-fs device config holds the tag in 36 bytes.
VIRTIO_FS_TAG_MAX = 36


class ShareBase(BaseModel):
    """Options of a share that do not depend on its plugins."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tag: Annotated[
        str,
        Field(
            min_length=1,
            max_length=VIRTIO_FS_TAG_MAX,
            pattern=r"^[^\x00/\s]+$",
            description="The share's name; the virtio-fs tag a guest mounts (`mount -t virtiofs TAG`).",
        ),
    ]
    socket: Path | None = Field(
        None, description="vhost-user socket `vfsframe serve` listens on for this share."
    )
    request_queues: int = Field(
        1, ge=1, le=64, description="virtio-fs request queues (QEMU's num-request-queues)."
    )
    cache: CachePolicyName = Field(
        "auto",
        description="Kernel cache policy: `none` (no caching, coherent with other clients), "
        "`auto` (1 s timeouts), `always` (the share changes only through this server).",
    )
    writeback_cache: bool = Field(
        False, description="Let the kernel buffer writes (FUSE writeback cache)."
    )


class ServerBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def duplicate_problems(shares: list[Any]) -> list[str]:
    """Tags and sockets used by more than one share, as "share[i].field: reason" lines."""
    problems = []
    for field in ("tag", "socket"):
        first_use: dict[Any, int] = {}
        for index, share in enumerate(shares):
            value = getattr(share, field)
            if value is None:
                continue
            if value in first_use:
                problems.append(
                    f"share[{index}].{field}: {str(value)!r} is already used by share[{first_use[value]}]"
                )
            else:
                first_use[value] = index
    return problems


def _require_type(value: Any) -> Any:
    # A plugin model may default its `type`; a config must still say which plugin it means.
    if isinstance(value, dict) and "type" not in value:
        raise PydanticCustomError("union_tag_not_found", "missing 'type'")
    return value


def plugin_union(models: list[type[PluginConfig]]) -> Any:
    """The discriminated union of plugin config models, keyed by their ``type`` field."""
    if not models:
        raise ValueError("no plugins of this kind are installed")
    if len(models) == 1:  # pydantic needs two members for a discriminated union
        return Annotated[models[0], BeforeValidator(_require_type)]
    union = Annotated[Union[tuple(models)], Field(discriminator="type")]  # noqa: UP007
    return Annotated[union, BeforeValidator(_require_type)]


class ConfigModels:
    """The share and server models for one plugin registry."""

    def __init__(self, registry: PluginRegistry) -> None:
        self.registry = registry
        backend = plugin_union([t.config for t in registry.backends.values()])
        middleware_types = [t.config for t in registry.middleware.values()]
        middleware: Any = plugin_union(middleware_types) if middleware_types else PluginConfig
        self.backend = backend
        self.share = create_model(
            "ShareConfig",
            __base__=ShareBase,
            backend=(backend, Field(description="Where the share's files live.")),
            middleware=(
                list[middleware],
                Field(
                    default_factory=list,
                    description="Middleware around the backend; the first listed is the outermost.",
                ),
            ),
        )
        self.server = create_model(
            "ServerConfig",
            __base__=ServerBase,
            shares=(
                list[self.share],  # type: ignore[name-defined]
                Field(
                    min_length=1,
                    validation_alias=AliasChoices("share", "shares"),
                    serialization_alias="share",
                    description="The shares this server serves (`[[share]]` tables).",
                ),
            ),
        )


@functools.cache
def _models_for(registry_id: int) -> ConfigModels:
    return ConfigModels(default_registry())


def default_models() -> ConfigModels:
    """Models for the plugins installed in this environment."""
    return _models_for(id(default_registry()))
