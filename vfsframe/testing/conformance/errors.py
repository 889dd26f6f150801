"""Asserting the errno of a failing call."""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any


def expect_errno(codes: int | set[int], call: Callable[..., Any], *args: Any) -> None:
    """``call(*args)`` must raise OSError with one of ``codes``."""
    wanted = {codes} if isinstance(codes, int) else codes
    names = "/".join(sorted(errno.errorcode[c] for c in wanted))
    try:
        call(*args)
    except OSError as exc:
        got = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        assert exc.errno in wanted, f"{call.__name__}{args}: {got}, expected {names}"
        return
    raise AssertionError(f"{call.__name__}{args} succeeded, expected {names}")
