"""`vfsframe schema`: the JSON Schema of config files, with every installed plugin's options."""

from __future__ import annotations

import argparse
import json

from vfsframe.config import default_models


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "schema",
        help="print the config JSON Schema",
        description="Print the JSON Schema of config files, including the options of every "
        "installed plugin (third-party ones too).",
    )
    parser.add_argument(
        "--markdown",
        action="store_true",
        help="print the Markdown configuration reference instead (docs/config-reference.md: "
        "vfsframe and its built-in plugins only)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.markdown:
        from vfsframe.config.reference import config_reference

        print(config_reference(), end="")
        return 0
    schema = default_models().server.model_json_schema(by_alias=True)
    print(json.dumps(schema, indent=2, sort_keys=True))
    return 0
