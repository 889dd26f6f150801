"""The `metrics` middleware's config model."""

from __future__ import annotations

import itertools
from typing import Literal

from pydantic import ConfigDict, Field, field_validator

from vfsframe.plugin import PluginConfig

DEFAULT_LISTEN = "127.0.0.1:9100"


def split_listen(listen: str) -> tuple[str, int]:
    """("host", port) of "host:port" or "[v6]:port"; ValueError with the reason if not."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{listen!r} is not HOST:PORT (e.g. '127.0.0.1:9100')")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{listen!r}: the port must be a number from 0 to 65535")
    return host, int(port_text)


class MetricsConfig(PluginConfig):
    """Per-operation counters and latency histograms, bytes moved and errors by errno, served
    in Prometheus text format."""

    # Shown in docs/config-reference.md and the JSON Schema.
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"type": "metrics", "listen": "127.0.0.1:9100"}]}
    )

    type: Literal["metrics"] = "metrics"
    listen: str | None = Field(
        DEFAULT_LISTEN,
        description="HOST:PORT of the HTTP endpoint (GET /metrics). Each share needs its own "
        "port; port 0 picks a free one (then `vfsframe stats` cannot find it); null: no endpoint.",
    )
    buckets: list[float] = Field(
        default=[
            0.00005,
            0.0001,
            0.00025,
            0.0005,
            0.001,
            0.0025,
            0.005,
            0.01,
            0.025,
            0.05,
            0.1,
            0.25,
            0.5,
            1.0,
            2.5,
            5.0,
            10.0,
        ],
        min_length=1,
        description="Upper bounds (seconds) of the latency histogram buckets, ascending.",
    )

    @field_validator("listen")
    @classmethod
    def _valid_listen(cls, value: str | None) -> str | None:
        if value is not None:
            split_listen(value)
        return value

    @field_validator("buckets")
    @classmethod
    def _ascending(cls, value: list[float]) -> list[float]:
        if any(b <= a for a, b in itertools.pairwise(value)) or value[0] <= 0:
            raise ValueError("buckets must be positive and strictly ascending")
        return value
