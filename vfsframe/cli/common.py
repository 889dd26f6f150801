"""Helpers the subcommands share: loading a config and choosing a share."""

from __future__ import annotations

import sys
from typing import Any

from vfsframe.config import ConfigError, load_config


class CommandError(Exception):
    """Ends a command with a message and an exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def load_or_report(source: str) -> Any:
    """The validated config, or a report on stderr and exit status 2."""
    try:
        return load_config(source)
    except ConfigError as exc:
        print(exc.report(), file=sys.stderr)
        raise SystemExit(2) from None


def choose_share(config: Any, tag: str | None) -> Any:
    tags = [share.tag for share in config.shares]
    if tag is not None:
        for share in config.shares:
            if share.tag == tag:
                return share
        raise CommandError(f"no share tagged {tag!r}; the config has: {', '.join(tags)}", 2)
    if len(config.shares) > 1:
        raise CommandError(
            f"the config has {len(tags)} shares; choose one with --share ({', '.join(tags)})", 2
        )
    return config.shares[0]
