"""`vfsframe check` shows the resolved chain in order and refuses bad middleware configs with
the field's path; `vfsframe stats` prints a running share's metrics."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_fuse
from vfsframe.cli import main
from vfsframe.config import load_config
from vfsframe.testing.mount import mounted_share
from vfsframe.testing.ports import free_port

CHAIN = """
[[share]]
tag = "data"
cache = "none"

[share.backend]
type = "memory"
capacity = "64MiB"

[[share.middleware]]
type = "log"
format = "json"

[[share.middleware]]
type = "metrics"
listen = "127.0.0.1:{port}"

[[share.middleware]]
type = "acl"
default = "allow"
rules = [{{ path = "/secrets/**", effect = "hide" }}]

[[share.middleware]]
type = "cache"
memory = "8MiB"

[[share.middleware]]
type = "idmap"
uid_map = [{{ guest = 0, host = 100000, count = 65536 }}]
"""


def vfsframe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vfsframe", *args], capture_output=True, text=True, timeout=60
    )


def test_check_prints_the_chain_outermost_first(tmp_path: Path) -> None:
    config = tmp_path / "chain.toml"
    config.write_text(CHAIN.format(port=9100))
    done = vfsframe("check", str(config))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    shares = lines[: next(i for i, line in enumerate(lines) if line.startswith("sandbox:"))]
    chain = [line.strip() for line in shares if line.startswith("  ")]
    assert [line.split(":")[0] for line in chain] == [
        "1. middleware log",
        "2. middleware metrics",
        "3. middleware acl",
        "4. middleware cache",
        "5. middleware idmap",
        "6. backend memory",
    ]
    assert "'/secrets/**'" in chain[2] and "listen='127.0.0.1:9100'" in chain[1]


BROKEN = {
    "bad glob": (
        '{ type = "acl", rules = [{ path = "/ok/**", effect = "deny" }, '
        '{ path = "/a**", effect = "deny" }] }',
        "share[0].middleware[0].rules[1].path: '/a**': '**' must be a whole path component",
    ),
    "unknown op class": (
        '{ type = "acl", rules = [{ path = "/a", ops = ["read", "exec"], effect = "deny" }] }',
        "share[0].middleware[0].rules[0].ops[1]:",
    ),
    "unknown effect": (
        '{ type = "acl", default = "maybe" }',
        "share[0].middleware[0].default:",
    ),
    "relative glob": (
        '{ type = "acl", rules = [{ path = "secrets", effect = "hide" }] }',
        "share[0].middleware[0].rules[0].path: 'secrets' must be absolute",
    ),
    "cache block size": (
        '{ type = "cache", block_size = "1000" }',
        "share[0].middleware[0].block_size: block_size must be a multiple of 4KiB",
    ),
    "log op": ('{ type = "log", ops = ["reed"] }', "share[0].middleware[0].ops: unknown operation"),
    "metrics listen": (
        '{ type = "metrics", listen = "9100" }',
        "share[0].middleware[0].listen: '9100' is not HOST:PORT",
    ),
    "idmap overlap": (
        '{ type = "idmap", gid_map = [{ guest = 0, host = 0, count = 10 }, '
        "{ guest = 5, host = 100, count = 10 }] }",
        "share[0].middleware[0].gid_map: ranges 0 and 1 overlap on the guest side",
    ),
    "unknown option": (
        '{ type = "cache", size = 3 }',
        "share[0].middleware[0].size: unknown option",
    ),
}


@pytest.mark.parametrize("case", BROKEN)
def test_bad_middleware_configs_name_the_field(tmp_path: Path, case: str) -> None:
    middleware, expected = BROKEN[case]
    config = tmp_path / "bad.toml"
    config.write_text(
        f'[[share]]\ntag = "a"\nbackend = {{ type = "memory" }}\nmiddleware = [{middleware}]\n'
    )
    done = vfsframe("check", str(config))
    assert done.returncode == 2
    assert expected in done.stderr, done.stderr


@pytest.mark.mount
def test_stats_prints_a_running_share(
    tmp_path: Path, mountpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require_fuse()
    config_path = tmp_path / "chain.toml"
    config_path.write_text(CHAIN.format(port=free_port()))
    share = load_config(config_path).shares[0]
    with mounted_share(mountpoint, share):
        (mountpoint / "f").write_bytes(b"x" * 3000)
        assert (mountpoint / "f").read_bytes() == b"x" * 3000
        assert main(["stats", str(config_path)]) == 0
        out = capsys.readouterr().out
        assert main(["stats", str(config_path), "--raw"]) == 0
        raw = capsys.readouterr().out
    assert out.startswith("share 'data' (http://127.0.0.1:")
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:] if line.strip()}
    assert rows["write"][1] == "1" and rows["create"][1] == "1"
    assert "bytes read 2.9 KiB, written 2.9 KiB" in out
    assert "vfsframe_operations_total" in raw


def test_stats_without_an_endpoint(tmp_path: Path) -> None:
    config = tmp_path / "plain.toml"
    config.write_text('[[share]]\ntag = "a"\nbackend = { type = "memory" }\n')
    done = vfsframe("stats", str(config))
    assert done.returncode == 2
    assert "share 'a': no metrics middleware in this share" in done.stdout
    config.write_text(CHAIN.format(port=free_port()))
    done = vfsframe("stats", str(config))  # nothing serves it
    assert done.returncode == 1
    assert "cannot fetch http://127.0.0.1:" in done.stdout
