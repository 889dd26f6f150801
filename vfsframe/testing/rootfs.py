"""A minimal Debian root file system for guests that boot from a virtio-fs share.

The tree is made once per machine with `debootstrap --variant=minbase` (plus the packages the
guest workloads need) from the Debian archive the system already uses, and cached outside the
repo in ~/.cache/vfsframe/rootfs/ (or $VFSFRAME_ROOTFS_CACHE). The cache directory of a tree is
named after a digest of what went into it (suite, variant, package list), so changing the list
builds a new tree; a build happens in a temporary directory renamed into place, so a build that
dies leaves nothing half-made behind.

Tests never boot the cached tree itself: `copy_tree` gives each boot its own copy (reflinked
where the host filesystem can), and a golden-image overlay uses a copy as its read-only lower.

`python -m vfsframe.testing.rootfs build` builds it up front (CI's installer does).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vfsframe.testing.guestvm import GuestSetupError, debian_mirror

SUITE = "bookworm"
VARIANT = "minbase"
# What the guest workloads run beyond minbase: interpreters, the SQLite shell, busybox for
# `poweroff -f` (minbase has no init system), mount for util-linux's mount.
PACKAGES = ("busybox", "mount", "perl", "python3", "sqlite3")
BUILD_TIMEOUT = 1800.0


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "vfsframe" / "rootfs"
    return Path(os.environ.get("VFSFRAME_ROOTFS_CACHE", default))


def recipe(packages: tuple[str, ...] = PACKAGES) -> str:
    """What a tree is built from; its digest names the cache entry."""
    return f"suite={SUITE}\nvariant={VARIANT}\ninclude={','.join(sorted(packages))}\n"


def _entry(cache: Path, packages: tuple[str, ...]) -> Path:
    digest = hashlib.sha256(recipe(packages).encode()).hexdigest()[:12]
    return cache / f"{SUITE}-{VARIANT}-{digest}"


def cached_tree(cache: Path | None = None, packages: tuple[str, ...] = PACKAGES) -> Path | None:
    """The cached tree for this package list, or None when it has not been built."""
    tree = _entry(cache or cache_dir(), packages) / "tree"
    return tree if tree.is_dir() else None


def build_rootfs(cache: Path | None = None, packages: tuple[str, ...] = PACKAGES) -> Path:
    """The root tree for this package list, built on first use (a few minutes)."""
    cache = cache or cache_dir()
    if tree := cached_tree(cache, packages):
        return tree
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time (parallel test workers)
        if tree := cached_tree(cache, packages):
            return tree
        if os.geteuid() != 0:
            raise GuestSetupError("debootstrap needs root to build the guest root file system")
        if shutil.which("debootstrap") is None:
            raise GuestSetupError("debootstrap not found: install Debian's debootstrap package")
        entry = _entry(cache, packages)
        building = Path(tempfile.mkdtemp(prefix="building-", dir=cache))
        try:
            _debootstrap(building / "tree", packages)
            _slim(building / "tree")
            (building / "recipe").write_text(recipe(packages))
            building.rename(entry)  # atomic: the entry appears complete or not at all
        finally:
            if building.exists():
                shutil.rmtree(building, ignore_errors=True)
        _prune(cache, keep=entry)
    return entry / "tree"


def _debootstrap(target: Path, packages: tuple[str, ...]) -> None:
    cmd = [
        "debootstrap", f"--variant={VARIANT}", f"--include={','.join(sorted(packages))}",
        "--components=main", SUITE, str(target), debian_mirror(),
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        raise GuestSetupError(f"debootstrap took more than {BUILD_TIMEOUT:.0f}s") from exc
    if proc.returncode:
        log = target / "debootstrap" / "debootstrap.log"
        detail = log.read_text(errors="replace")[-2000:] if log.exists() else proc.stderr[-2000:]
        raise GuestSetupError(f"debootstrap failed ({proc.returncode}):\n{detail}")


def _slim(tree: Path) -> None:
    """Drop what a test guest never reads: downloaded packages and apt's lists (tens of MB
    that every per-test copy would otherwise carry)."""
    for pattern in ("var/cache/apt/archives/*.deb", "var/lib/apt/lists/*_Packages"):
        for path in tree.glob(pattern):
            path.unlink()
    (tree / "etc" / "hostname").write_text("vfsframe-guest\n")


def _prune(cache: Path, keep: Path) -> None:
    """Trees of older package lists and leftovers of dead builds."""
    for path in cache.iterdir():
        if path.is_dir() and path != keep:
            shutil.rmtree(path, ignore_errors=True)


def copy_tree(source: Path, dest: Path) -> Path:
    """A private copy of a root tree (owners, modes, device nodes, hard links kept), reflinked
    where the filesystem supports it, so a guest can change it without touching the cache."""
    proc = subprocess.run(
        ["cp", "-a", "--reflink=auto", str(source), str(dest)], capture_output=True, text=True
    )
    if proc.returncode:
        raise GuestSetupError(f"cannot copy the root tree: {proc.stderr.strip()[-1000:]}")
    return dest


def tree_size(tree: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(tree):
        for name in files:
            with contextlib.suppress(OSError):  # removed while we walk
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def main(argv: list[str]) -> int:
    if argv[:1] != ["build"]:
        print("usage: python -m vfsframe.testing.rootfs build", file=sys.stderr)
        return 2
    start = time.monotonic()
    fresh = cached_tree() is None
    try:
        tree = build_rootfs()
    except GuestSetupError as exc:
        print(f"rootfs: {exc}", file=sys.stderr)
        return 1
    took = f"built in {time.monotonic() - start:.0f}s" if fresh else "cached"
    print(f"guest root file system ({took}, {tree_size(tree) / 1e6:.0f} MB): {tree}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
