"""The `idmap` middleware's config model."""

from __future__ import annotations

import itertools
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from vfsframe.plugin import PluginConfig

ID_LIMIT = 1 << 32  # uids and gids are 32-bit; (uid_t)-1 is never a real id
OVERFLOW_ID = 65534


class IdRange(BaseModel):
    """``count`` consecutive ids from ``guest`` on the guest side are ``host`` on the host."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    guest: int = Field(ge=0, lt=ID_LIMIT - 1, description="First id as the guest sees it.")
    host: int = Field(ge=0, lt=ID_LIMIT - 1, description="First id as the host stores it.")
    count: int = Field(1, ge=1, description="How many consecutive ids the range maps.")

    @model_validator(mode="after")
    def _fits(self) -> IdRange:
        if max(self.guest, self.host) + self.count > ID_LIMIT - 1:
            raise ValueError("the range runs past the largest id (4294967294)")
        return self


def _no_overlap(ranges: list[IdRange]) -> list[IdRange]:
    for side in ("guest", "host"):
        spans = sorted(
            (getattr(r, side), getattr(r, side) + r.count, i) for i, r in enumerate(ranges)
        )
        for (_, end, first), (start, _, second) in itertools.pairwise(spans):
            if start < end:
                raise ValueError(
                    f"ranges {first} and {second} overlap on the {side} side; every id must "
                    "map one way only"
                )
    return ranges


class IdmapConfig(PluginConfig):
    """Translate guest uids/gids to host ids on the way in and back on the way out, as user
    namespaces' uid_map/gid_map and virtiofsd's --translate-uid do."""

    # Shown in docs/config-reference.md and the JSON Schema.
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "idmap",
                    "uid_map": [{"guest": 0, "host": 100000, "count": 65536}],
                    "gid_map": [{"guest": 0, "host": 100000, "count": 65536}],
                }
            ]
        }
    )

    type: Literal["idmap"] = "idmap"
    uid_map: list[IdRange] = Field(
        default_factory=list,
        description="uid ranges, e.g. [{guest = 0, host = 100000, count = 65536}]. Empty: uids "
        "pass unchanged.",
    )
    gid_map: list[IdRange] = Field(
        default_factory=list, description="gid ranges, as uid_map. Empty: gids pass unchanged."
    )
    overflow_uid: int = Field(
        OVERFLOW_ID,
        ge=0,
        lt=ID_LIMIT - 1,
        description="uid shown for a host uid no range maps, and used on the host for a "
        "caller whose guest uid no range maps.",
    )
    overflow_gid: int = Field(
        OVERFLOW_ID, ge=0, lt=ID_LIMIT - 1, description="As overflow_uid, for gids."
    )

    @field_validator("uid_map", "gid_map")
    @classmethod
    def _disjoint(cls, value: list[IdRange]) -> list[IdRange]:
        return _no_overlap(value)
