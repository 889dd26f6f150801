"""The rootfs cache (vfsframe.testing.rootfs) without the network: a stand-in `debootstrap` on
PATH records its arguments and makes a tree, so what is built when, and what is left behind
when a build fails, can be checked in a second."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vfsframe.testing import rootfs
from vfsframe.testing.guestvm import GuestSetupError

FAKE_DEBOOTSTRAP = """#!/bin/sh
# args: --variant=... --include=... --components=... SUITE TARGET MIRROR
echo "$@" >> "$CALLS"
[ -n "$FAIL" ] && { echo "E: no route to mirror" >&2; exit 1; }
target=$5
mkdir -p "$target/etc" "$target/var/cache/apt/archives" "$target/var/lib/apt/lists"
echo 12.0 > "$target/etc/debian_version"
: > "$target/var/cache/apt/archives/perl_5.36_amd64.deb"
: > "$target/var/lib/apt/lists/deb.debian.org_dists_bookworm_main_binary-amd64_Packages"
"""


@pytest.fixture
def fake_debootstrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "debootstrap"
    script.write_text(FAKE_DEBOOTSTRAP)
    script.chmod(0o755)
    calls = tmp_path / "calls"
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setenv("CALLS", str(calls))
    monkeypatch.setenv("VFSFRAME_DEBIAN_MIRROR", "http://mirror.invalid/debian")
    monkeypatch.delenv("FAIL", raising=False)
    return calls


@pytest.mark.skipif(os.geteuid() != 0, reason="build_rootfs refuses to run without root")
def test_built_once_then_cached(tmp_path: Path, fake_debootstrap: Path) -> None:
    cache = tmp_path / "cache"
    tree = rootfs.build_rootfs(cache, ("perl", "python3"))
    assert (tree / "etc" / "debian_version").read_text() == "12.0\n"
    assert rootfs.build_rootfs(cache, ("python3", "perl")) == tree  # order does not matter
    (call,) = fake_debootstrap.read_text().splitlines()
    args = call.split()
    assert args[:4] == [
        "--variant=minbase",
        "--include=perl,python3",
        "--components=main",
        "bookworm",
    ]
    assert args[5] == "http://mirror.invalid/debian"
    # Built in a temporary directory of the cache, then renamed into place.
    target = Path(args[4])
    assert target.parent.parent == cache and target.parent.name.startswith("building-")
    assert not target.parent.exists()
    # Slimmed: no downloaded packages or apt lists in the tree every test copies.
    assert not list((tree / "var/cache/apt/archives").iterdir())
    assert not list((tree / "var/lib/apt/lists").iterdir())
    assert (tree.parent / "recipe").read_text() == rootfs.recipe(("perl", "python3"))


@pytest.mark.skipif(os.geteuid() != 0, reason="build_rootfs refuses to run without root")
def test_changed_package_list_rebuilds_and_drops_the_old_tree(
    tmp_path: Path, fake_debootstrap: Path
) -> None:
    cache = tmp_path / "cache"
    old = rootfs.build_rootfs(cache, ("perl",))
    new = rootfs.build_rootfs(cache, ("perl", "sqlite3"))
    assert new != old and new.is_dir()
    assert not old.exists()
    assert len(fake_debootstrap.read_text().splitlines()) == 2
    assert sorted(p.name for p in cache.iterdir() if p.is_dir()) == [new.parent.name]


@pytest.mark.skipif(os.geteuid() != 0, reason="build_rootfs refuses to run without root")
def test_failed_build_leaves_nothing(
    tmp_path: Path, fake_debootstrap: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("FAIL", "1")
    with pytest.raises(GuestSetupError, match="no route to mirror"):
        rootfs.build_rootfs(cache, ("perl",))
    assert rootfs.cached_tree(cache, ("perl",)) is None
    assert not [p for p in cache.iterdir() if p.is_dir()]


def test_copy_keeps_the_cache_private(tmp_path: Path) -> None:
    source = tmp_path / "source"
    (source / "bin").mkdir(parents=True)
    (source / "bin" / "tool").write_text("v1")
    (source / "bin" / "tool").chmod(0o755)
    os.link(source / "bin" / "tool", source / "bin" / "alias")
    os.symlink("tool", source / "bin" / "link")
    copy = rootfs.copy_tree(source, tmp_path / "copy")
    (copy / "bin" / "tool").write_text("changed")
    assert (source / "bin" / "tool").read_text() == "v1"
    assert (copy / "bin" / "tool").stat().st_mode & 0o777 == 0o755
    assert os.readlink(copy / "bin" / "link") == "tool"
    assert (copy / "bin" / "alias").stat().st_ino == (copy / "bin" / "tool").stat().st_ino
