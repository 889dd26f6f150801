"""Path globs of ACL rules: ``*`` and ``?`` within one component, ``[...]`` classes, and
``**`` as a whole component for any number of components (zero included), so ``/a/**``
matches ``/a`` itself and everything beneath it."""

from __future__ import annotations

import re


class GlobError(ValueError):
    """A pattern that cannot be compiled; the message says what to change."""


def compile_glob(pattern: str) -> re.Pattern[str]:
    """The regular expression matching exactly the share paths ``pattern`` describes."""
    if not pattern.startswith("/"):
        raise GlobError(f"{pattern!r} must be absolute within the share (start with '/')")
    if pattern == "/":
        return re.compile(r"/\Z")
    parts = pattern.rstrip("/").split("/")[1:]
    regex = ""
    for part in parts:
        if part == "**":
            regex += "(?:/.*)?"
        elif not part:
            raise GlobError(f"{pattern!r} has an empty path component ('//')")
        elif "**" in part:
            raise GlobError(f"{pattern!r}: '**' must be a whole path component, as in '/a/**/b'")
        else:
            regex += "/" + _component(part, pattern)
    # A pattern of only "/**" must still match "/" itself.
    if regex.startswith("(?:/.*)?") and parts == ["**"]:
        regex = "/.*"
    return re.compile(regex + r"\Z", re.DOTALL)


def _component(part: str, pattern: str) -> str:
    out = ""
    index = 0
    while index < len(part):
        char = part[index]
        if char == "*":
            out += "[^/]*"
        elif char == "?":
            out += "[^/]"
        elif char == "[":
            end = part.find(
                "]", index + 2 if part[index + 1 : index + 2] in ("!", "^") else index + 1
            )
            if end < 0:
                raise GlobError(f"{pattern!r}: '[' at {part!r} is never closed with ']'")
            body = part[index + 1 : end]
            if body[:1] in ("!", "^"):
                body = "^" + body[1:]
            out += "[" + body.replace("\\", "\\\\") + "]"
            index = end
        else:
            out += re.escape(char)
        index += 1
    try:
        re.compile(out)
    except re.error as exc:
        raise GlobError(f"{pattern!r}: bad character class in {part!r}: {exc}") from None
    return out
