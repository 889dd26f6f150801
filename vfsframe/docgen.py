"""Regenerate the docs pages made from code: ``python -m vfsframe.docgen [--check]``.

- docs/config-reference.md from the config models (vfsframe.config.reference);
- docs/cli.md from the argparse parsers (vfsframe.cli.reference).

``--check`` writes nothing and exits 1 naming each page that is out of date; the test suite
runs the same comparison (tests/test_docs_generated.py).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from vfsframe.cli.reference import cli_reference
from vfsframe.config.reference import config_reference

# The docs/ directory of the source tree this package is imported from.
DOCS_DIR = Path(__file__).resolve().parent.parent / "docs"
REGENERATE = "python -m vfsframe.docgen"

PAGES: dict[str, Callable[[], str]] = {
    "config-reference.md": config_reference,
    "cli.md": cli_reference,
}


def stale_pages(docs: Path = DOCS_DIR) -> list[str]:
    """Names of the generated pages whose committed text differs from the code's."""
    stale = []
    for name, render in PAGES.items():
        path = docs / name
        current = path.read_text() if path.exists() else None
        if current != render():
            stale.append(name)
    return stale


def write_pages(docs: Path = DOCS_DIR) -> list[str]:
    """Write every generated page; the names of those that changed."""
    changed = []
    for name, render in PAGES.items():
        path = docs / name
        text = render()
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            changed.append(name)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=REGENERATE, description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 if stale")
    parser.add_argument("--docs", type=Path, default=DOCS_DIR, help=f"default {DOCS_DIR}")
    args = parser.parse_args(argv)
    if not args.docs.is_dir():
        print(f"{args.docs}: no docs directory (run from a source checkout)", file=sys.stderr)
        return 2
    if args.check:
        stale = stale_pages(args.docs)
        for name in stale:
            print(f"{args.docs / name} is out of date: run `{REGENERATE}`", file=sys.stderr)
        return 1 if stale else 0
    for name in write_pages(args.docs):
        print(f"wrote {args.docs / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
