"""`vfsframe check CONFIG`: validate a config and print each share's resolved chain."""

from __future__ import annotations

import argparse
from typing import Any

from vfsframe.cli.common import load_or_report
from vfsframe.runtime import describe_chain
from vfsframe.sandbox import make_plan


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "check",
        help="validate a config and print the resolved chains",
        description="Validate CONFIG without starting anything. Exit status 2 if it is invalid.",
    )
    parser.add_argument("config", help="config file or builtin:NAME")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    print(f"{args.config}: ok, {len(config.shares)} share(s)")
    for share in config.shares:
        print(
            f"share {share.tag!r}: cache={share.cache}, request_queues={share.request_queues}, "
            f"{_sockets(share)}"
        )
        for line in describe_chain(share):
            print(f"  {line}")
    return _print_sandbox(config)


def _print_sandbox(config: Any) -> int:
    """What `vfsframe serve` will run in (paths, namespaces, capabilities, seccomp)."""
    try:
        plan = make_plan(config, config.shares)
    except ValueError as exc:
        print(f"sandbox: refused: {exc}")
        return 2
    for line in plan.describe():
        print(line)
    return 0


def _sockets(share: Any) -> str:
    if share.sockets is not None:
        return f"sockets={', '.join(map(str, share.sockets))} (one guest each)"
    return f"socket={share.socket}"
