"""OSError construction shared by the backend's modules."""

from __future__ import annotations

import os


def fs_error(code: int, path: str | None = None) -> OSError:
    """The error a hook raises: the errno reaches the kernel, the path the session's log."""
    if path is None:
        return OSError(code, os.strerror(code))
    return OSError(code, os.strerror(code), path)
