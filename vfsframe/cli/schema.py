"""`vfsframe schema`: the JSON Schema of config files, with every installed plugin's options."""

from __future__ import annotations

import argparse
import json

from vfsframe.config import default_models


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("schema", help="print the config JSON Schema")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    schema = default_models().server.model_json_schema(by_alias=True)
    print(json.dumps(schema, indent=2, sort_keys=True))
    return 0
