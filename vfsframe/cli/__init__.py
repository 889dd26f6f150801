"""The `vfsframe` command: one module per subcommand, each with a ``register`` function."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Subcommand modules, in the order `vfsframe --help` lists them.
COMMANDS = ("mount", "serve", "qemu_args", "check", "schema", "plugins", "stats")

EXIT_CONFIG_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vfsframe",
        description="File servers for Linux guests (virtio-fs) and hosts (/dev/fuse).",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="how much to log on stderr (default: info)",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"vfsframe.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"vfsframe.cli.{name}":
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return int(args.func(args) or 0)
