"""docs/cli.md, generated from the argparse parsers so the docs cannot drift.

Each subcommand gets its usage line, its description and a table of its arguments (help,
choices, default), in the order `vfsframe --help` lists them. Regenerate with
``python -m vfsframe.docgen``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
from collections.abc import Iterator

from vfsframe.cli import build_parser

# Usage lines wrap at the terminal width; a fixed width keeps the page the same everywhere.
USAGE_WIDTH = 100

HEADER = """\
# Command-line reference

<!-- Generated from the argparse parsers by `python -m vfsframe.docgen`; do not edit.
     A test fails when this file and the parsers disagree. -->

`vfsframe COMMAND ...` (or `python -m vfsframe COMMAND ...`). `CONFIG` is a `.toml`, `.yaml`
or `.json` file (see the [configuration reference](config-reference.md)) or `builtin:NAME`
for a config shipped with vfsframe (`builtin:memory`: one in-memory share). Exit status: 0 on
success, 2 for an invalid config or a usage error (the config's problems are printed with
their field paths), 1 when something fails at run time (a backend that cannot start, a mount
the kernel refuses).
"""


@contextlib.contextmanager
def _fixed_width() -> Iterator[None]:
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(USAGE_WIDTH)
    try:
        yield
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, one-line help, parser) of each subcommand, in --help order."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            return [(name, helps.get(name, ""), sub) for name, sub in action.choices.items()]
    return []


def _argument_name(action: argparse.Action) -> str:
    if action.option_strings:
        names = ", ".join(action.option_strings)
        if action.nargs == 0:
            return f"`{names}`"
        metavar = action.metavar or action.dest.upper()
        if action.choices and not action.metavar:
            metavar = "{" + ",".join(map(str, action.choices)) + "}"
        if action.nargs == argparse.REMAINDER:
            return f"`{names} {metavar}...`"
        return f"`{names} {metavar}`"
    metavar = action.metavar or action.dest
    return f"`{metavar}`" + (" (optional)" if action.nargs == "?" else "")


def _argument_row(action: argparse.Action) -> str:
    help_text = (action.help or "").replace("%(default)s", str(action.default))
    if action.choices and action.metavar:  # otherwise the name lists them
        choices = ", ".join(f"`{c}`" for c in action.choices)
        help_text += f" (one of {choices})"
    default = ""
    if action.option_strings and action.nargs != 0 and action.default not in (None, [], ""):
        default = f"`{action.default}`"
    cells = [_argument_name(action), _escape(help_text), default]
    return "| " + " | ".join(cells) + " |"


def _escape(text: str) -> str:
    # Table cells: a bare | ends a cell; < and > would read as HTML tags.
    return re.sub(r"(?<!\\)\|", r"\\|", text).replace("<", "&lt;").replace(">", "&gt;")


def _arguments(parser: argparse.ArgumentParser) -> list[str]:
    actions = [
        a
        for a in parser._actions
        if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction)
    ]
    if not actions:
        return []
    rows = ["| argument | meaning | default |", "|---|---|---|"]
    rows += [_argument_row(action) for action in actions]
    return [*rows, ""]


def _usage(parser: argparse.ArgumentParser) -> list[str]:
    prefix = "usage: "
    # argparse indents continuation lines under the program name, after the prefix.
    lines = parser.format_usage().removeprefix(prefix).rstrip().splitlines()
    lines = lines[:1] + [line.removeprefix(" " * len(prefix)) for line in lines[1:]]
    return ["```", *lines, "```", ""]


def _prose(text: str) -> str:
    return text.replace("<", "&lt;").replace(">", "&gt;")


def cli_reference(parser: argparse.ArgumentParser | None = None) -> str:
    """The Markdown of docs/cli.md."""
    with _fixed_width():
        parser = parser or build_parser()
        commands = _subcommands(parser)
        out = [HEADER]
        out += ["## `vfsframe`", "", *_usage(parser), _prose(parser.description or ""), ""]
        out += ["Options before the command:", "", *_arguments(parser)]
        out += ["| command | what it does |", "|---|---|"]
        out += [f"| [`{name}`](#vfsframe-{name}) | {_escape(h)} |" for name, h, _ in commands]
        out.append("")
        for name, help_text, sub in commands:
            out += [f'<a id="vfsframe-{name}"></a>', "", f"## `vfsframe {name}`", ""]
            out += _usage(sub)
            out += [_prose(sub.description or help_text), ""]
            out += _arguments(sub)
    return "\n".join(out).rstrip() + "\n"
