"""`vfsframe plugins`: the installed backends and middleware, with their options."""

from __future__ import annotations

import argparse

from vfsframe.plugin import PluginType, default_registry


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("plugins", help="list installed backends and middleware")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    registry = default_registry()
    for title, table in (("backends", registry.backends), ("middleware", registry.middleware)):
        print(f"{title}:")
        if not table:
            print("  (none installed)")
        for name in sorted(table):
            _describe(table[name])
    for origin, reason in sorted(registry.broken.items()):
        print(f"failed to load {origin}: {reason}")
    return 0


def _describe(plugin: PluginType) -> None:
    print(f"  {plugin.name}  ({plugin.origin})  {plugin.summary}")
    for field_name, field in plugin.config.model_fields.items():
        if field_name == "type":
            continue
        default = (
            "required"
            if field.is_required()
            else f"default {field.get_default(call_default_factory=True)!r}"
        )
        print(f"      {field_name}: {default}. {field.description or ''}".rstrip())
