"""Which extended attribute names the guest may use, and what it sees of the others."""

from __future__ import annotations

import errno
import os

from .config import PassthroughConfig

_PRIVILEGED = ("trusted.", "security.")
_POSIX_ACL = ("system.posix_acl_access", "system.posix_acl_default")


def _error(code: int, name: str) -> OSError:
    return OSError(code, os.strerror(code), name)


class XattrPolicy:
    def __init__(self, config: PassthroughConfig) -> None:
        self.enabled = config.xattr
        self.privileged = config.privileged_xattrs
        self.posix_acl = config.posix_acl

    def _check_enabled(self) -> None:
        if not self.enabled:
            raise OSError(errno.EOPNOTSUPP, "extended attributes are off for this share")

    def _hidden(self, name: str) -> int:
        """The errno class of a refused name: 0 when the name is served."""
        if not self.privileged and name.startswith(_PRIVILEGED):
            return errno.EPERM
        if not self.posix_acl and name in _POSIX_ACL:
            return errno.EOPNOTSUPP
        return 0

    def check_read(self, name: str) -> None:
        self._check_enabled()
        code = self._hidden(name)
        if code == errno.EPERM:
            raise _error(errno.ENODATA, name)  # as if absent: nothing to learn from it
        if code:
            raise _error(code, name)

    def check_write(self, name: str) -> None:
        self._check_enabled()
        code = self._hidden(name)
        if code:
            raise _error(code, name)

    def visible(self, names: list[str]) -> list[str]:
        self._check_enabled()
        return [name for name in names if not self._hidden(name)]
