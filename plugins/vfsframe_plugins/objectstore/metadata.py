"""POSIX attributes and xattrs as S3 user metadata (ASCII names and values).

- ``vfs-mode``: the full st_mode in octal (type bits included; a symlink is S_IFLNK).
- ``vfs-uid`` / ``vfs-gid``: decimal ids.
- ``vfs-mtime``: ns since the epoch, decimal.
- ``vfs-xattr``: base64 of the xattrs packed as (u8 name length, u16 value length, name,
  value) records. Absent when there are none.

Objects written by other tools have none of these; they get the backend's defaults.
"""

from __future__ import annotations

import base64
import binascii
import errno
import stat
import struct
from dataclasses import dataclass, field

MODE = "vfs-mode"
UID = "vfs-uid"
GID = "vfs-gid"
MTIME = "vfs-mtime"
XATTR = "vfs-xattr"
_RECORD = struct.Struct(">BH")


@dataclass(slots=True)
class Meta:
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    xattrs: dict[str, bytes] = field(default_factory=dict)

    def copy(self) -> Meta:
        return Meta(self.mode, self.uid, self.gid, self.mtime_ns, dict(self.xattrs))

    def encode(self) -> dict[str, str]:
        encoded = {
            MODE: f"{self.mode:o}",
            UID: str(self.uid),
            GID: str(self.gid),
            MTIME: str(self.mtime_ns),
        }
        if self.xattrs:
            packed = bytearray()
            for name, value in self.xattrs.items():
                raw = name.encode("utf-8", "surrogateescape")
                packed += _RECORD.pack(len(raw), len(value)) + raw + value
            encoded[XATTR] = base64.b64encode(packed).decode()
        return encoded

    @staticmethod
    def size_of(encoded: dict[str, str]) -> int:
        """Bytes S3 counts against its user-metadata limit (names and values)."""
        return sum(len(k) + len(v) for k, v in encoded.items())

    def encode_within(self, limit: int) -> dict[str, str]:
        """The metadata, or ENOSPC when it does not fit the store's limit."""
        encoded = self.encode()
        if self.size_of(encoded) > limit:
            raise OSError(errno.ENOSPC, f"metadata over the store's {limit}-byte limit")
        return encoded

    @classmethod
    def decode(
        cls, raw: dict[str, str] | None, default_mode: int, uid: int, gid: int, mtime_ns: int
    ) -> Meta:
        raw = raw or {}
        meta = cls(default_mode, uid, gid, mtime_ns)
        try:
            if MODE in raw:
                mode = int(raw[MODE], 8)
                # Keep the type the object's place implies unless the metadata names one.
                meta.mode = mode if stat.S_IFMT(mode) else stat.S_IFMT(default_mode) | mode
            if UID in raw:
                meta.uid = int(raw[UID])
            if GID in raw:
                meta.gid = int(raw[GID])
            if MTIME in raw:
                meta.mtime_ns = int(raw[MTIME])
            if XATTR in raw:
                meta.xattrs = _unpack_xattrs(base64.b64decode(raw[XATTR]))
        except (ValueError, binascii.Error, struct.error):
            pass  # foreign or damaged metadata: the defaults stand for what did not parse
        return meta


def _unpack_xattrs(packed: bytes) -> dict[str, bytes]:
    xattrs = {}
    offset = 0
    while offset < len(packed):
        name_length, value_length = _RECORD.unpack_from(packed, offset)
        offset += _RECORD.size
        name = packed[offset : offset + name_length].decode("utf-8", "surrogateescape")
        offset += name_length
        xattrs[name] = bytes(packed[offset : offset + value_length])
        offset += value_length
    return xattrs
