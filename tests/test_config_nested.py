"""Nested backend configs (NestedBackend / NestedLayer): validation against every registered
backend type, recursively; error paths into the nesting; the JSON Schema."""

from __future__ import annotations

import json
from typing import Any, Literal

import pytest
from pydantic import ConfigDict, Field
from vfsframe_plugins.memory import PLUGIN as MEMORY
from vfsframe_plugins.overlay import PLUGIN as OVERLAY
from vfsframe_plugins.overlay import OverlayConfig

from vfsframe.config import ConfigError, ConfigModels, validate_config
from vfsframe.config.models import LayerConfig, NestedBackend, layer_parts
from vfsframe.plugin import PluginConfig, PluginRegistry, PluginType
from vfsframe.runtime import build_chain, describe_chain


class DiskConfig(PluginConfig):
    """A third-party backend the nested unions must know about."""

    type: Literal["disk"] = "disk"
    root: str = Field(description="Where.")


class TraceConfig(PluginConfig):
    type: Literal["trace"] = "trace"
    level: int = Field(1, description="How much.")


class MirrorConfig(PluginConfig):
    """A second composite type: one nested backend, validated like overlay's layers."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)
    type: Literal["mirror"] = "mirror"
    of: NestedBackend = Field(description="The mirrored backend.")


def _never(config: Any, context: Any) -> object:
    raise AssertionError("not built in these tests")


REGISTRY = PluginRegistry(
    [
        MEMORY,
        OVERLAY,
        PluginType("disk", "backend", DiskConfig, _never),
        PluginType("mirror", "backend", MirrorConfig, _never),
        PluginType("trace", "middleware", TraceConfig, _never),
    ]
)


@pytest.fixture(scope="module")
def models() -> ConfigModels:
    return ConfigModels(REGISTRY)


def problems(models: ConfigModels, backend: dict[str, Any]) -> list[str]:
    document = {"share": [{"tag": "t", "backend": backend}]}
    with pytest.raises(ConfigError) as info:
        validate_config(document, "<test>", models)
    return info.value.problems


def valid(models: ConfigModels, backend: dict[str, Any]) -> Any:
    return validate_config({"share": [{"tag": "t", "backend": backend}]}, "<t>", models).shares[0]


def test_layers_of_every_registered_type(models: ConfigModels) -> None:
    share = valid(
        models,
        {
            "type": "overlay",
            "lower": [
                {"type": "disk", "root": "/a"},
                {"type": "overlay", "lower": [{"type": "memory"}]},
                {"type": "mirror", "of": {"type": "disk", "root": "/m"}},
            ],
            "upper": {"type": "memory", "capacity": "1MiB"},
        },
    )
    lower = share.backend.lower
    assert isinstance(lower[0], DiskConfig) and lower[0].root == "/a"
    assert isinstance(lower[1], OverlayConfig)
    assert isinstance(lower[2], MirrorConfig) and lower[2].of.root == "/m"
    assert int(share.backend.upper.capacity) == 1 << 20


def test_layer_with_its_own_middleware(models: ConfigModels) -> None:
    share = valid(
        models,
        {
            "type": "overlay",
            "lower": [
                {"backend": {"type": "disk", "root": "/a"}, "middleware": [{"type": "trace"}]}
            ],
        },
    )
    layer = share.backend.lower[0]
    assert isinstance(layer, LayerConfig)
    backend, middleware = layer_parts(layer)
    assert backend.root == "/a" and [m.type for m in middleware] == ["trace"]
    assert layer_parts(DiskConfig(root="/x")) == (DiskConfig(root="/x"), [])


@pytest.mark.parametrize(
    ("backend", "expected"),
    [
        (
            {"type": "overlay", "lower": [{"type": "memory"}, {"type": "disk"}]},
            "share[0].backend.lower[1].root: required, but missing",
        ),
        (
            {"type": "overlay", "lower": [{"type": "memory"}], "upper": {"type": "memory", "x": 1}},
            "share[0].backend.upper.x: unknown option",
        ),
        (
            {"type": "overlay", "lower": [{"type": "overlay", "lower": [{"type": "disk"}]}]},
            "share[0].backend.lower[0].lower[0].root: required, but missing",
        ),
        (
            {"type": "overlay", "lower": [{"type": "nosuch"}]},
            "share[0].backend.lower[0]: unknown type 'nosuch'; installed: disk, memory, mirror, overlay",
        ),
        (
            {"type": "overlay", "lower": [{"root": "/a"}]},
            "share[0].backend.lower[0]: missing 'type' (which plugin to use)",
        ),
        (
            {"type": "overlay", "lower": []},
            "share[0].backend.lower: List should have at least 1 item after validation, not 0",
        ),
        (
            {"type": "overlay", "lower": [{"backend": {"type": "disk"}, "middleware": []}]},
            "share[0].backend.lower[0].backend.root: required, but missing",
        ),
        (
            {
                "type": "overlay",
                "lower": [
                    {"backend": {"type": "memory"}, "middleware": [{"type": "trace", "level": "x"}]}
                ],
            },
            "share[0].backend.lower[0].middleware[0].level: "
            "Input should be a valid integer, unable to parse string as an integer",
        ),
        (
            {
                "type": "overlay",
                "lower": [{"backend": {"type": "memory"}, "middleware": [{"type": "nosuch"}]}],
            },
            "share[0].backend.lower[0].middleware[0]: unknown type 'nosuch'; installed: trace",
        ),
        (
            {
                "type": "overlay",
                "lower": [{"type": "disk", "root": "/srv/a"}],
                "upper": {"backend": {"type": "disk", "root": "/srv/a/up"}},
            },
            "share[0].backend: upper root '/srv/a/up' overlaps lower[0] root '/srv/a': "
            "give the upper layer a directory of its own",
        ),
        (
            {"type": "mirror", "of": {"type": "memory", "capacity": "lots"}},
            "share[0].backend.of.capacity: could not parse value and unit from byte string",
        ),
    ],
)
def test_error_paths_point_into_the_nesting(
    models: ConfigModels, backend: dict[str, Any], expected: str
) -> None:
    assert problems(models, backend) == [expected]


def test_json_schema_carries_nested_unions(models: ConfigModels) -> None:
    schema = models.server.model_json_schema()
    definitions = schema["$defs"]
    lower = definitions["OverlayConfig"]["properties"]["lower"]
    members = {ref["$ref"].rsplit("/", 1)[1] for ref in lower["items"]["oneOf"]}
    assert members == {"MemoryConfig", "OverlayConfig", "DiskConfig", "MirrorConfig", "LayerConfig"}
    assert "description" in lower
    layer = definitions["LayerConfig"]["properties"]
    assert {ref["$ref"] for ref in layer["middleware"]["items"]["oneOf"]} == {"#/$defs/TraceConfig"}
    json.dumps(schema)  # serialisable


def test_models_of_another_registry_rebuild_the_unions(models: ConfigModels) -> None:
    """A model built for one registry (here: the installed one) is rebuilt for another."""
    OverlayConfig.model_validate({"lower": [{"type": "memory"}]})
    again = ConfigModels(REGISTRY)
    share = valid(again, {"type": "overlay", "lower": [{"type": "disk", "root": "/d"}]})
    assert isinstance(share.backend.lower[0], DiskConfig)


def test_installed_overlay_builds_nested_chains(tmp_path: Any) -> None:
    """Through the installed registry: each layer becomes a chain of its own."""
    document = {
        "share": [
            {
                "tag": "t",
                "backend": {
                    "type": "overlay",
                    "lower": [{"backend": {"type": "memory"}, "middleware": []}],
                    "upper": {"type": "memory"},
                },
            }
        ]
    }
    share = validate_config(document, "<t>").shares[0]
    chain = build_chain(share.backend, share.middleware)
    try:
        assert [layer.writable for layer in chain.backend.layers] == [True, False]
    finally:
        chain.close()


def test_share_field_named_like_a_plugin_is_not_a_tag() -> None:
    """A middleware named `cache` must not hide the share's own `cache` option in errors."""
    registry = PluginRegistry([MEMORY, PluginType("cache", "middleware", TraceConfig, _never)])
    document = {"share": [{"tag": "t", "cache": "sometimes", "backend": {"type": "memory"}}]}
    with pytest.raises(ConfigError) as info:
        validate_config(document, "<t>", ConfigModels(registry))
    assert info.value.problems[0].startswith("share[0].cache: ")


def test_check_describes_nested_chains(models: ConfigModels) -> None:
    share = valid(
        models,
        {
            "type": "overlay",
            "lower": [
                {"type": "disk", "root": "/a"},
                {"backend": {"type": "disk", "root": "/b"}, "middleware": [{"type": "trace"}]},
            ],
            "upper": {"type": "memory", "capacity": 4096},
        },
    )
    assert describe_chain(share) == [
        "1. backend overlay: (defaults)",
        "   lower[0]:",
        "     1. backend disk: root='/a'",
        "   lower[1]:",
        "     1. middleware trace: level=1",
        "     2. backend disk: root='/b'",
        "   upper:",
        "     1. backend memory: capacity=4096, max_inodes=1000000",
    ]
