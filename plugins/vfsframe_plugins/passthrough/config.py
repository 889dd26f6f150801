"""The `passthrough` backend's config model."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, Field, field_validator

from vfsframe.plugin import PluginConfig


class PassthroughConfig(PluginConfig):
    """A host directory shared as it is: the guest sees its files, modes, owners and inode
    numbers; nothing outside ``root`` is ever resolved or touched."""

    # Shown in docs/config-reference.md and the JSON Schema.
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"type": "passthrough", "root": "/srv/vfsframe/vm1"},
                {
                    "type": "passthrough",
                    "root": "/srv/vfsframe/media",
                    "readonly": True,
                    "xattr": False,
                },
            ]
        }
    )

    type: Literal["passthrough"] = "passthrough"
    root: Path = Field(
        description=(
            "The host directory to share; it must exist and be a directory. Symlinks in the "
            "path to it are resolved once, at start; nothing below it is ever followed."
        ),
    )
    readonly: bool = Field(
        False,
        description="Refuse every change with EROFS (writes, creates, renames, setattr, xattrs).",
    )
    xattr: bool = Field(
        True,
        description="Serve extended attributes; when off, every xattr call fails with EOPNOTSUPP.",
    )
    privileged_xattrs: bool = Field(
        False,
        description=(
            "Let the guest read and write `trusted.*` and `security.*` attributes. Off: they "
            "are hidden from listings, read as absent (ENODATA) and refused (EPERM) on set "
            "and remove, because the server's privileges would otherwise be the guest's."
        ),
    )
    posix_acl: bool = Field(
        False,
        description=(
            "Pass `system.posix_acl_access` / `system.posix_acl_default` through to the host. "
            "Off: EOPNOTSUPP. The guest kernel does not enforce ACLs it reads from a FUSE "
            "server, the host does: turn it on only when host-side enforcement is the point."
        ),
    )
    posix_locks: bool = Field(
        True,
        description=(
            "Serve POSIX record locks (fcntl F_SETLK/F_SETLKW/F_GETLK) as host locks, so they "
            "conflict with host processes too. Off: the kernel keeps them local to the client."
        ),
    )
    flock: bool = Field(
        True, description="Serve flock(2) locks as host flock locks on the open file."
    )
    preserve_ownership: bool = Field(
        True,
        description=(
            "When the server runs as root, create files, directories, nodes and symlinks as "
            "the calling guest uid/gid (per-thread fsuid/fsgid), honouring setgid directories. "
            "Off, or not root: new files belong to the server's user."
        ),
    )
    allow_devices: bool = Field(
        False,
        description="Let the guest create character and block device nodes (EPERM otherwise).",
    )
    direct_io: Literal["strip", "passthrough", "refuse"] = Field(
        "strip",
        description=(
            "What to do with O_DIRECT in open flags: `strip` it (the host page cache is used), "
            "`passthrough` (host O_DIRECT; unaligned guest buffers then fail with EINVAL), or "
            "`refuse` the open with EINVAL."
        ),
    )
    submounts: bool = Field(
        True,
        description=(
            "Serve file systems mounted below `root`. Their inode numbers are told apart from "
            "the root file system's by a per-device tag in the top 8 bits. Off: names that "
            "cross a mount point fail with EXDEV."
        ),
    )

    @field_validator("root")
    @classmethod
    def _root_is_directory(cls, root: Path) -> Path:
        if not root.is_absolute():
            raise ValueError(f"{str(root)!r} is not an absolute path")
        try:
            mode = os.stat(root).st_mode
        except OSError as exc:
            raise ValueError(f"{str(root)!r} cannot be shared: {exc.strerror}") from None
        if not stat.S_ISDIR(mode):
            raise ValueError(f"{str(root)!r} is not a directory")
        return root
