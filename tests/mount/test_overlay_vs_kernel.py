"""Differential test: the overlay backend against Linux overlayfs itself.

The same lower directories (one or two layers) are mounted twice: by the host kernel's
overlayfs (upper and work directories on the host; `redirect_dir=off` and `index=on`, the
semantics the overlay backend implements) and by vfsframe's overlay (passthrough lowers;
memory or passthrough upper) through /dev/fuse. The same random sequence of system calls runs
against both; every call must give the same result (errno) and the two trees must look the
same — names, types, modes, owners, sizes, contents, symlink targets and which names are hard
links of one file."""

from __future__ import annotations

import ctypes
import hashlib
import os
import random
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import require_fuse
from vfsframe.testing.mount import mounted_share, share_config

pytestmark = pytest.mark.mount

NAMES = ["a", "b", "c"]
libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100


def renameat2(old: Path, new: Path, flags: int) -> None:
    if libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def remove_tree(path: Path) -> None:
    """rm -rf with plain system calls, so the first error is the result."""
    if path.is_dir() and not path.is_symlink():
        for child in sorted(os.listdir(path)):
            remove_tree(path / child)
        os.rmdir(path)
    else:
        os.unlink(path)


STEPS = 200


def snapshot(root: Path) -> tuple[dict[str, str], set[frozenset[str]]]:
    """Every entry → a description without times or inode numbers; and the hard-link groups."""
    entries: dict[str, str] = {}
    by_ino: dict[int, list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            st = os.lstat(path)
            kind = stat.S_IFMT(st.st_mode)
            text = f"{kind:o} {stat.S_IMODE(st.st_mode):o} {st.st_uid}:{st.st_gid}"
            if stat.S_ISREG(st.st_mode):
                digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
                text += f" {st.st_size} {digest} nlink={st.st_nlink}"
                by_ino.setdefault(st.st_ino, []).append(rel)
            elif stat.S_ISLNK(st.st_mode):
                text += " -> " + os.readlink(path)
            entries[rel] = text
    groups = {frozenset(names) for names in by_ino.values() if len(names) > 1}
    return entries, groups


def make_lower(root: Path, rng: random.Random) -> None:
    """A small random tree with a hard link and a symlink."""
    for name in NAMES:
        if rng.random() < 0.5:
            (root / name).mkdir()
            for child in rng.sample(NAMES, 2):
                (root / name / child).write_bytes(f"{name}/{child}\n".encode() * rng.randint(1, 50))
        else:
            (root / name).write_bytes(name.encode() * rng.randint(1, 100))
    files = [p for p in root.rglob("*") if p.is_file()]
    if len(files) >= 2:
        target = root / "hard"
        if not target.exists():
            os.link(files[0], target)
    if not (root / "sym").exists():
        os.symlink("a", root / "sym")


def random_path(rng: random.Random) -> str:
    return "/".join(rng.choice([*NAMES, "hard", "sym"]) for _ in range(rng.randint(1, 2)))


def operations(rng: random.Random, counter: int) -> tuple[str, Callable[[Path], object]]:
    """One random system call, as a function of the mount root (same choice for both)."""
    path, other = random_path(rng), random_path(rng)
    data = f"write {counter}\n".encode()
    size = rng.randint(0, 40)
    mode = rng.choice([0o600, 0o640, 0o755])

    def append(root: Path) -> None:
        with open(root / path, "ab") as f:
            f.write(data)

    def overwrite(root: Path) -> None:
        with open(root / path, "r+b") as f:
            f.write(data)

    def create(root: Path) -> None:
        with open(root / path, "xb") as f:
            f.write(data)

    choices: list[tuple[str, Callable[[Path], object]]] = [
        ("create", create),
        ("append", append),
        ("overwrite", overwrite),
        ("truncate", lambda root: os.truncate(root / path, size)),
        ("chmod", lambda root: os.chmod(root / path, mode)),
        ("unlink", lambda root: os.unlink(root / path)),
        ("mkdir", lambda root: os.mkdir(root / path)),
        ("rmdir", lambda root: os.rmdir(root / path)),
        ("rename", lambda root: os.rename(root / path, root / other)),
        ("link", lambda root: os.link(root / path, root / other)),
        ("symlink", lambda root: os.symlink(other, root / path)),
        ("listdir", lambda root: sorted(os.listdir(root / path))),
        ("chown", lambda root: os.chown(root / path, size, size, follow_symlinks=False)),
        ("setxattr", lambda root: os.setxattr(root / path, "user.k", data)),
        ("getxattr", lambda root: os.getxattr(root / path, "user.k")),
        ("listxattr", lambda root: sorted(os.listxattr(root / path))),
        ("noreplace", lambda root: renameat2(root / path, root / other, 1)),
        ("exchange", lambda root: renameat2(root / path, root / other, 2)),
        ("rm_rf", lambda root: remove_tree(root / path)),
        ("open_trunc", lambda root: open(root / path, "wb").close()),
        ("read", lambda root: (root / path).read_bytes()),
    ]
    return rng.choice(choices)


def outcome(action: Callable[[Path], object], root: Path) -> object:
    try:
        return ("ok", action(root))
    except OSError as exc:
        return ("errno", exc.errno)


@pytest.fixture
def kernel_mount(tmp_path: Path) -> Iterator[Path]:
    """The kernel overlayfs mountpoint; unmounted afterwards."""
    require_fuse()
    mnt = tmp_path / "kmnt"
    mnt.mkdir()
    yield mnt
    subprocess.run(["umount", str(mnt)], capture_output=True)


def mount_kernel_overlay(lowers: list[Path], mnt: Path) -> None:
    work = mnt.parent
    (work / "upper").mkdir()
    (work / "work").mkdir()
    options = (
        f"lowerdir={':'.join(map(str, lowers))},upperdir={work / 'upper'},"
        f"workdir={work / 'work'},redirect_dir=off,index=on,metacopy=off"
    )
    done = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", options, str(mnt)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.fail(f"kernel overlayfs is needed as the oracle: {done.stderr.strip()}")


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("upper", ["memory", "passthrough"])
@pytest.mark.parametrize("seed", range(12))
def test_same_results_as_kernel_overlayfs(
    seed: int, upper: str, layers: int, kernel_mount: Path, mountpoint: Path, tmp_path: Path
) -> None:
    rng = random.Random(seed)
    lowers = [tmp_path / f"lower{i}" for i in range(layers)]  # topmost first
    for lower in lowers:
        lower.mkdir()
        make_lower(lower, rng)
    lowers_before = [snapshot(lower) for lower in lowers]
    mount_kernel_overlay(lowers, kernel_mount)
    backend: dict[str, object] = {
        "type": "overlay",
        "lower": [
            {"type": "passthrough", "root": str(lower), "readonly": True} for lower in lowers
        ],
        "upper": {"type": "memory"},
    }
    if upper == "passthrough":
        (tmp_path / "vupper").mkdir()
        backend["upper"] = {"type": "passthrough", "root": str(tmp_path / "vupper")}
    with mounted_share(mountpoint, share_config(backend)):
        assert snapshot(mountpoint) == snapshot(kernel_mount)
        for counter in range(STEPS):
            state = rng.getstate()
            name, action = operations(rng, counter)
            theirs = outcome(action, kernel_mount)
            rng.setstate(state)
            _, action = operations(rng, counter)
            ours = outcome(action, mountpoint)
            assert ours == theirs, (seed, counter, name)
            if counter % 10 == 9:
                assert snapshot(mountpoint) == snapshot(kernel_mount), (seed, counter)
        assert snapshot(mountpoint) == snapshot(kernel_mount)
    assert [snapshot(lower) for lower in lowers] == lowers_before


@pytest.mark.parametrize("seed", range(8))
def test_reads_layers_written_by_kernel_overlayfs(
    seed: int, kernel_mount: Path, mountpoint: Path, tmp_path: Path
) -> None:
    """An upper directory that Linux overlayfs wrote (0/0 device whiteouts, opaque xattrs)
    used as a lower layer: both overlays must merge it with its base the same way."""
    rng = random.Random(1000 + seed)
    base = tmp_path / "base"
    base.mkdir()
    make_lower(base, rng)
    mount_kernel_overlay([base], kernel_mount)
    for counter in range(STEPS):
        outcome(operations(rng, counter)[1], kernel_mount)
    subprocess.run(["umount", str(kernel_mount)], check=True)
    written = tmp_path / "upper"  # what the kernel wrote: now a read-only layer
    options = f"lowerdir={written}:{base}"
    subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", options, str(kernel_mount)], check=True
    )
    backend = {
        "type": "overlay",
        "lower": [
            {"type": "passthrough", "root": str(layer), "readonly": True, "privileged_xattrs": True}
            for layer in (written, base)
        ],
    }
    with mounted_share(mountpoint, share_config(backend)):
        assert snapshot(mountpoint) == snapshot(kernel_mount)
