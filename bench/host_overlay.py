"""Host-mount benchmark of the overlay backend: what the merged view and copy-up cost.

Run as root:  .venv/bin/python bench/host_overlay.py [--files 2000] [--mib 256]

One lower directory (a tree of small files and one large file) is served three ways, each in
the same run: a plain passthrough mount of it, a vfsframe overlay (that directory as a
passthrough lower, a memory upper), and the kernel's own overlayfs (`redirect_dir=off,
index=on`) as the reference. Reported per workload: seconds, and the overlay's ratio to the
passthrough mount (the price of merging) — kernel overlayfs shows what merging costs when it
is in the kernel. The vfsframe servers run as their own processes (`vfsframe mount`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import drop_caches, timed, vfsframe_mount


def make_lower(root: Path, files: int, mib: int) -> None:
    for index in range(files):
        directory = root / f"d{index % 50:02d}"
        directory.mkdir(exist_ok=True)
        (directory / f"f{index:05d}").write_bytes(b"x" * 2048)
    with open(root / "large", "wb") as f:
        block = os.urandom(1 << 20)
        for _ in range(mib):
            f.write(block)


@contextlib.contextmanager
def kernel_overlay(lower: Path) -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="bench-kovl-"))
    for name in ("upper", "work", "mnt"):
        (base / name).mkdir()
    options = (
        f"lowerdir={lower},upperdir={base / 'upper'},workdir={base / 'work'},"
        "redirect_dir=off,index=on,metacopy=off"
    )
    subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", options, str(base / "mnt")], check=True
    )
    try:
        yield base / "mnt"
    finally:
        subprocess.run(["umount", str(base / "mnt")], check=True)
        shutil.rmtree(base)


def workloads(root: Path, files: int) -> dict[str, Callable[[], None]]:
    def walk() -> None:
        subprocess.run(["find", str(root), "-ls"], stdout=subprocess.DEVNULL, check=True)

    def read_tree() -> None:
        subprocess.run(f"tar cf - -C {root} . | cat > /dev/null", shell=True, check=True)

    def copy_up_small() -> None:  # a write to every small file: a copy-up each
        for path in sorted(root.glob("d*/f*"))[: files // 4]:
            with open(path, "ab") as f:
                f.write(b"!")

    def copy_up_large() -> None:
        with open(root / "large", "ab") as f:
            f.write(b"!")

    def create() -> None:
        new = root / "new"
        new.mkdir()
        for index in range(files // 4):
            (new / f"n{index:05d}").write_bytes(b"n")

    def remove_all() -> None:
        subprocess.run(["rm", "-rf", *map(str, root.iterdir())], check=True)

    return {
        "walk (find -ls)": walk,
        "read tree (tar)": read_tree,
        "copy-up small files": copy_up_small,
        "copy-up large file": copy_up_large,
        "create small files": create,
        "rm -rf everything": remove_all,
    }


def run(root: Path, files: int) -> dict[str, float]:
    results = {}
    for name, work in workloads(root, files).items():
        drop_caches()
        results[name] = timed(work)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--mib", type=int, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-lower-") as directory:
        lower = Path(directory)
        make_lower(lower, args.files, args.mib)
        passthrough = f'[share.backend]\ntype = "passthrough"\nroot = "{lower}"\nreadonly = true\n'
        overlay = (
            '[share.backend]\ntype = "overlay"\nupper = { type = "memory", capacity = "4GiB" }\n'
            f'[[share.backend.lower]]\ntype = "passthrough"\nroot = "{lower}"\nreadonly = true\n'
        )
        columns: dict[str, dict[str, float]] = {}
        with vfsframe_mount(passthrough) as root:
            # Only the reading workloads: a read-only passthrough refuses the rest.
            reads = workloads(root, args.files)
            columns["passthrough"] = {}
            for name in ("walk (find -ls)", "read tree (tar)"):
                drop_caches()
                columns["passthrough"][name] = timed(reads[name])
        with vfsframe_mount(overlay) as root:
            columns["vfsframe overlay"] = run(root, args.files)
        with kernel_overlay(lower) as root:
            columns["kernel overlayfs"] = run(root, args.files)
    print(f"{'workload':24} {'passthrough':>12} {'overlay':>10} {'ratio':>7} {'kernel ovl':>11}")
    for name in columns["vfsframe overlay"]:
        ours = columns["vfsframe overlay"][name]
        plain = columns["passthrough"].get(name)
        ratio = f"{ours / plain:6.2f}x" if plain else "      -"
        plain_text = f"{plain:11.3f}s" if plain else " " * 12
        kernel = columns["kernel overlayfs"][name]
        print(f"{name:24} {plain_text} {ours:9.3f}s {ratio} {kernel:10.3f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
