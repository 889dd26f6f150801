"""Host-mount benchmark of the passthrough backend against the native directory it shares.

Run as root:  .venv/bin/python bench/host_passthrough.py [--mib 1024] [--reads 20000]
                                                          [--files 10000] [--repeat 3]

Each round runs every workload on a native directory, then on a passthrough mount with
cache=auto and one with cache=none; the ratios against native are medians of the per-round
ratios (whole rounds differ by up to 2x on a shared machine). Each target gets a new ext4 file
system of its own on a loop device in --dir (`bench.common.fresh_filesystem`): on a file
system where earlier runs deleted files, a create costs what they deleted. `--on-dir` tests
--dir's own file system instead. Page caches are dropped before each read workload, so reads
come from the disk on both sides. The vfsframe server runs as its own process
(`vfsframe mount`), as a user would run it. The issue's target: large sequential I/O at least
50% of native.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    Figures,
    compare_in_rounds,
    drop_caches,
    fresh_filesystem,
    print_comparison,
    timed,
    vfsframe_mount,
    whole_number,
)
from bench.host_memory import metadata_workloads, sequential_workloads

BLOCK = 1 << 20
PAGE = 4096
FRESH_SIZE = 8 << 30  # sparse; the sequential and random files are written one after the other


@contextlib.contextmanager
def scratch_directory(base: Path, prefix: str, fresh: bool) -> Iterator[Path]:
    """A new directory in ``base``; on a new file system of its own when ``fresh``."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    try:
        with fresh_filesystem(path, FRESH_SIZE) if fresh else contextlib.nullcontext():
            yield path
    finally:
        shutil.rmtree(path)


@contextlib.contextmanager
def passthrough(root: Path, cache: str) -> Iterator[Path]:
    with vfsframe_mount(f'[share.backend]\ntype = "passthrough"\nroot = "{root}"\n', cache) as mp:
        yield mp


def random_reads(root: Path, mib: int, reads: int) -> dict[str, float]:
    """4 KiB reads at random page-aligned offsets of a ``mib`` MiB file, after drop_caches."""
    path = root / "random"
    block = os.urandom(BLOCK)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    try:
        for _ in range(mib):
            os.write(fd, block)
        os.fsync(fd)
    finally:
        os.close(fd)
    offsets = [page * PAGE for page in random.Random(42).sample(range(mib * BLOCK // PAGE), reads)]
    drop_caches()
    buffer = bytearray(PAGE)

    def read() -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            for offset in offsets:
                os.preadv(fd, [buffer], offset)
        finally:
            os.close(fd)

    result = {"rand read 4k": reads / timed(read)}
    path.unlink()
    return result


UNITS = {
    "seq write": "MB/s",
    "seq read": "MB/s",
    "rand read 4k": "IOPS",
    "create": "ops/s",
    "stat": "ops/s",
    "unlink": "ops/s",
}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mib", type=int, default=1024, help="sequential / random file size")
    parser.add_argument("--reads", type=int, default=20_000, help="random 4 KiB reads")
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3, help="rounds (medians are quoted)")
    parser.add_argument(
        "--dir", type=Path, default=Path("/var/tmp"), help="where the file systems are made"
    )
    parser.add_argument(
        "--on-dir", action="store_true", help="test --dir's own file system, not new ones"
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root (drop_caches and mounting need it)", file=sys.stderr)
        return 2
    fresh = not args.on_dir

    @contextlib.contextmanager
    def native() -> Iterator[Path]:
        with scratch_directory(args.dir, "native-", fresh) as path:
            yield path

    @contextlib.contextmanager
    def shared(cache: str) -> Iterator[Path]:
        with scratch_directory(args.dir, "shared-", fresh) as root, passthrough(root, cache) as mp:
            yield mp

    targets: dict[str, Callable[[], contextlib.AbstractContextManager[Path]]] = {
        "native": native,
        "passthrough cache=auto": lambda: shared("auto"),
        "passthrough cache=none": lambda: shared("none"),
    }
    print(
        f"{'on' if args.on_dir else 'new ext4 file systems in'} {args.dir}: "
        f"{args.mib} MiB sequential in 1 MiB blocks, {args.reads} random 4 KiB reads, "
        f"{args.files} files; {args.repeat} round(s), medians; {os.cpu_count()} CPUs",
        flush=True,
    )
    started = time.monotonic()

    def workloads(root: Path) -> Figures:
        results = sequential_workloads(root, args.mib)
        results |= random_reads(root, args.mib, args.reads)
        return results | metadata_workloads(root, args.files)

    def run(
        mount: Callable[[], contextlib.AbstractContextManager[Path]], _: int
    ) -> tuple[Figures, str]:
        with mount() as root:
            return workloads(root), ""

    rounds = {name: functools.partial(run, mount) for name, mount in targets.items()}
    samples, ratios = compare_in_rounds(rounds, args.repeat, whole_number)
    print_comparison(samples, ratios, UNITS, whole_number, "native")
    print(f"\n({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
