"""The generated docs pages (docs/config-reference.md, docs/cli.md) match the code."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import Field

from vfsframe.cli.reference import cli_reference
from vfsframe.config import ConfigError, validate_config
from vfsframe.config.models import ConfigModels
from vfsframe.config.reference import builtin_registry, config_reference
from vfsframe.docgen import DOCS_DIR, PAGES, REGENERATE, stale_pages
from vfsframe.plugin import PluginConfig, PluginRegistry, PluginType


def test_committed_pages_are_current() -> None:
    stale = stale_pages()
    assert not stale, f"{', '.join(stale)} out of date with the code: run `{REGENERATE}`"


def test_check_names_a_stale_page(tmp_path: Path) -> None:
    for name, render in PAGES.items():
        (tmp_path / name).write_text(render())
    good = subprocess.run(
        [sys.executable, "-m", "vfsframe.docgen", "--check", "--docs", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert good.returncode == 0, good.stderr
    (tmp_path / "cli.md").write_text("edited by hand\n")
    stale = subprocess.run(
        [sys.executable, "-m", "vfsframe.docgen", "--check", "--docs", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert stale.returncode == 1
    assert f"cli.md is out of date: run `{REGENERATE}`" in stale.stderr
    assert "config-reference" not in stale.stderr


class ThirdPartyConfig(PluginConfig):
    """A plugin from outside vfsframe."""

    type: Literal["thirdparty"] = "thirdparty"
    speed: int = Field(3, description="How fast.")


THIRD_PARTY = PluginType("thirdparty", "backend", ThirdPartyConfig, lambda c, ctx: None)


def test_reference_leaves_out_third_party_plugins() -> None:
    builtin = builtin_registry()
    names = set(builtin.backends) | set(builtin.middleware)
    assert {"memory", "passthrough", "overlay", "objectstore", "acl", "log"} <= names
    with_third_party = PluginRegistry([*builtin.backends.values(), *builtin.middleware.values()])
    with_third_party.add(THIRD_PARTY)
    text = config_reference(ConfigModels(with_third_party))
    assert "thirdparty" not in text and "How fast." not in text
    assert text == config_reference()


def test_reference_covers_every_builtin_option() -> None:
    text = (DOCS_DIR / "config-reference.md").read_text()
    registry = builtin_registry()
    for plugin in [*registry.backends.values(), *registry.middleware.values()]:
        assert f'<a id="{plugin.kind}-{plugin.name}"></a>' in text
        for field in plugin.config.model_fields:
            if field != "type":
                assert f"| `{field}` |" in text, f"{plugin.name}.{field} missing"


def test_cli_page_lists_every_command_and_option() -> None:
    text = cli_reference()
    for command in ("mount", "serve", "qemu-args", "check", "schema", "plugins", "stats"):
        assert f"## `vfsframe {command}`" in text
    for option in ("--socket-path PATH", "--fd FDNUM", "--print-capabilities", "--run COMMAND"):
        assert f"`{option}" in text


def test_reference_examples_are_valid_configs() -> None:
    """Each plugin's example, as the reference prints it, is TOML a config accepts (host
    directories the examples name need not exist here)."""
    text = (DOCS_DIR / "config-reference.md").read_text()
    blocks = re.findall(r"```toml\n(.*?)```", text, re.S)
    assert len(blocks) >= 9, "every built-in plugin's model offers an example"
    models = ConfigModels(builtin_registry())
    for block in blocks:
        share = '[[share]]\ntag = "t"\n'
        if block.startswith("[[share.middleware]]"):
            share += 'backend = { type = "memory" }\n'
        document = tomllib.loads(share + block)
        try:
            validate_config(document, "example", models)
        except ConfigError as exc:
            missing = [p for p in exc.problems if "cannot be shared: No such file" in p]
            assert missing == exc.problems, f"{block}\n{exc.report()}"
