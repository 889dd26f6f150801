"""The server config's pydantic models, built from the installed plugin types.

Each plugin registers a config model under its ``type`` name; a share's ``backend`` is the
discriminated union of every backend model and each ``middleware`` entry the union of every
middleware model. So a third-party plugin's options are validated and exported as JSON
Schema exactly like a built-in one's.

Composite plugins (overlay) declare fields that hold whole nested configs with the
annotations ``NestedBackend`` (a backend table), ``NestedMiddleware`` (a middleware table)
and ``NestedLayer`` (a backend table, or ``{backend = {...}, middleware = [...]}``). They
resolve to the unions of the registry whose models are being built, so nesting is recursive
and open to third-party types; models using them set ``ConfigDict(defer_build=True)``.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    create_model,
    model_validator,
)
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

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
    sockets: list[Path] | None = Field(
        None,
        min_length=1,
        description="Several vhost-user sockets, one guest each, instead of `socket`: every "
        "guest gets its own device and FUSE session (nodes, handles) over the share's one "
        "backend, so all of them see the same files.",
    )
    request_queues: int = Field(
        1,
        ge=1,
        le=64,
        description="virtio-fs request queues (QEMU's num-request-queues). One suits shares "
        "that mostly stream large files, one per guest vCPU those that mostly create, look up "
        'and remove (docs/virtio.md, "One queue or several").',
    )
    cache: CachePolicyName = Field(
        "auto",
        description="Kernel cache policy: `none` (no caching, coherent with other clients), "
        "`auto` (1 s timeouts), `always` (the share changes only through this server).",
    )
    writeback_cache: bool = Field(
        False, description="Let the kernel buffer writes (FUSE writeback cache)."
    )

    @model_validator(mode="after")
    def _one_socket_field(self) -> ShareBase:
        if self.socket is not None and self.sockets is not None:
            raise ValueError("give `socket` (one guest) or `sockets` (several guests), not both")
        return self

    @property
    def socket_paths(self) -> list[Path]:
        """Every vhost-user socket of the share, one per guest (empty if it has none)."""
        if self.sockets is not None:
            return list(self.sockets)
        return [self.socket] if self.socket is not None else []


def _id_mapping(value: Any) -> Any:
    from vfsframe.sandbox.idmap import IdMapping

    return IdMapping.parse(value) if isinstance(value, str) else value


class ServerBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    # The sandbox of `vfsframe serve` (docs/security.md); `vfsframe mount` ignores these.
    sandbox: Literal["namespace", "chroot", "none"] = Field(
        "namespace",
        description="How `vfsframe serve` isolates itself once the shares are built: "
        "`namespace` (new mount, PID, IPC, UTS and network namespaces and a minimal root "
        "holding only what the shares declare), `chroot` (an empty root, no namespaces), or "
        "`none`. Capabilities are dropped to what the shares need in every mode.",
    )
    seccomp: Literal["kill", "log", "none"] = Field(
        "kill",
        description="The system call allow-list of `vfsframe serve`: a call outside it ends "
        "the process (`kill`), is let through and reported by name (`log`), or no filter.",
    )
    uid_map: list[Annotated[Any, BeforeValidator(_id_mapping)]] = Field(
        default_factory=list,
        description="Run `vfsframe serve` in a user namespace with these uid mappings, "
        "written `:namespace_uid:host_uid:count:` (as virtiofsd's --uid-map); the server "
        "runs as the host uid that namespace uid 0 maps to. Needs sandbox = 'namespace'.",
    )
    gid_map: list[Annotated[Any, BeforeValidator(_id_mapping)]] = Field(
        default_factory=list,
        description="The gid mappings of that user namespace, `:namespace_gid:host_gid:count:`.",
    )


def duplicate_problems(shares: list[Any]) -> list[str]:
    """Tags and sockets used twice (by two shares, or twice in one share's `sockets`), as
    "share[i].field: reason" lines."""
    problems = []
    for kind, uses in (("tag", _tag_uses(shares)), ("socket", _socket_uses(shares))):
        first_use: dict[Any, str] = {}
        for where, value in uses:
            # Two spellings of one socket file are one socket.
            key = value.resolve() if kind == "socket" else value
            if key in first_use:
                problems.append(f"{where}: {str(value)!r} is already used by {first_use[key]}")
            else:
                # A share has one tag, so naming the share says it; a socket may be one of many.
                first_use[key] = where.removesuffix(".tag")
    return problems


def _tag_uses(shares: list[Any]) -> list[tuple[str, Any]]:
    return [(f"share[{index}].tag", share.tag) for index, share in enumerate(shares)]


def _socket_uses(shares: list[Any]) -> list[tuple[str, Path]]:
    uses = []
    for index, share in enumerate(shares):
        if share.socket is not None:
            uses.append((f"share[{index}].socket", share.socket))
        for position, path in enumerate(share.sockets or ()):
            uses.append((f"share[{index}].sockets[{position}]", path))
    return uses


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


# The union tag of a `{backend = ..., middleware = [...]}` layer; error paths leave it out.
LAYER_TAG = "backend+middleware"


class LayerConfig(BaseModel):
    """A nested backend with middleware of its own (the second form of ``NestedLayer``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    backend: Any = Field(description="The layer's backend (a full backend table).")
    middleware: list[Any] = Field(
        default_factory=list,
        description="Middleware around this layer's backend; the first listed is the outermost.",
    )


class _NestedTypes:
    """The plugin config models nested fields resolve to while one ConfigModels is built."""

    def __init__(self, registry: PluginRegistry) -> None:
        self.backends = {name: t.config for name, t in registry.backends.items()}
        self.middleware = {name: t.config for name, t in registry.middleware.items()}
        self._layer_model: type[BaseModel] | None = None

    def layer_model(self) -> type[BaseModel]:
        # One subclass per registry: its fields' unions are this registry's.
        if self._layer_model is None:
            self._layer_model = create_model(
                "LayerConfig",
                __base__=LayerConfig,
                backend=(NestedBackend, Field(description="The layer's backend.")),
                middleware=(
                    list[NestedMiddleware],  # type: ignore[valid-type]
                    Field(
                        default_factory=list,
                        description="Middleware around this layer's backend; first listed is outermost.",
                    ),
                ),
            )
        return self._layer_model


_building: contextvars.ContextVar[_NestedTypes] = contextvars.ContextVar("vfsframe_nested_types")


def _nested_types() -> _NestedTypes:
    try:
        return _building.get()
    except LookupError:  # a plugin model validated on its own: the installed plugins
        return _NestedTypes(default_registry())


@contextlib.contextmanager
def _resolving_nested(registry: PluginRegistry) -> Iterator[None]:
    """Build (or rebuild) every deferred plugin model against ``registry``'s unions.

    pydantic reuses a model's finished schema inside other models, so a nested model built
    for another registry (or on its own) would keep that registry's union: rebuild them.
    """
    token = _building.set(_NestedTypes(registry))
    try:
        deferred = [
            t.config
            for t in [*registry.backends.values(), *registry.middleware.values()]
            if t.config.model_config.get("defer_build")
        ]
        for _ in range(min(len(deferred), 2)):  # twice: deferred models may nest each other
            for model in deferred:
                model.model_rebuild(force=True)
        yield
    finally:
        _building.reset(token)


def _type_of(value: Any) -> str | None:
    if isinstance(value, dict):
        if "type" in value:
            return str(value["type"])
        return LAYER_TAG if "backend" in value else None
    if isinstance(value, LayerConfig):
        return LAYER_TAG
    return getattr(value, "type", None)


class _Nested:
    def __init__(self, kind: Literal["backend", "middleware", "layer"]) -> None:
        self.kind = kind

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        types = _nested_types()
        models = types.middleware if self.kind == "middleware" else types.backends
        if not models:
            raise ValueError(f"no {self.kind} plugins are installed")
        choices: dict[Any, CoreSchema] = {
            name: handler.generate_schema(model) for name, model in models.items()
        }
        if self.kind == "layer":
            choices[LAYER_TAG] = handler.generate_schema(types.layer_model())
        return core_schema.tagged_union_schema(choices, discriminator=_type_of)


#: A field holding a full backend config of any installed backend type (overlay included).
NestedBackend = Annotated[Any, _Nested("backend")]
#: A field holding a full middleware config of any installed middleware type.
NestedMiddleware = Annotated[Any, _Nested("middleware")]
#: A backend table, or ``{backend = {...}, middleware = [...]}`` for a backend with its own
#: middleware; the value is a backend config or a ``LayerConfig`` (see ``layer_parts``).
NestedLayer = Annotated[Any, _Nested("layer")]


def layer_parts(layer: Any) -> tuple[Any, list[Any]]:
    """The backend config and middleware configs of a ``NestedLayer`` value."""
    if isinstance(layer, LayerConfig):
        return layer.backend, list(layer.middleware)
    return layer, []


class ConfigModels:
    """The share and server models for one plugin registry."""

    def __init__(self, registry: PluginRegistry) -> None:
        self.registry = registry
        with _resolving_nested(registry):
            self._build(registry)

    def _build(self, registry: PluginRegistry) -> None:
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
