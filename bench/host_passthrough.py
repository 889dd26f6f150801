"""Host-mount benchmark of the passthrough backend against the native directory it shares.

Run as root:  .venv/bin/python bench/host_passthrough.py [--mib 1024] [--reads 20000]
                                                          [--files 10000] [--repeat 1]

Every workload runs on the native directory and on a passthrough mount of a sibling
directory on the same file system, in the same run, and is reported as a ratio against
native. Page caches are dropped before each read workload, so reads come from the disk on
both sides. The vfsframe server runs as its own process (`vfsframe mount`), as a user would
run it. The issue's target: large sequential I/O at least 50% of native.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import collect_samples, drop_caches, timed, vfsframe_mount
from bench.host_memory import metadata_workloads, sequential_workloads

BLOCK = 1 << 20
PAGE = 4096


@contextlib.contextmanager
def native(base: Path) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="native-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path)


@contextlib.contextmanager
def passthrough(base: Path, cache: str) -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="shared-", dir=base))
    try:
        with vfsframe_mount(
            f'[share.backend]\ntype = "passthrough"\nroot = "{root}"\n', cache
        ) as mp:
            yield mp
    finally:
        shutil.rmtree(root)


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


def run_target(
    name: str,
    mount: Callable[[], contextlib.AbstractContextManager[Path]],
    args: argparse.Namespace,
) -> dict[str, list[float]]:
    def workloads(root: Path) -> dict[str, float]:
        results = sequential_workloads(root, args.mib)
        results |= random_reads(root, args.mib, args.reads)
        return results | metadata_workloads(root, args.files)

    return collect_samples(name, mount, args.repeat, workloads)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mib", type=int, default=1024, help="sequential / random file size")
    parser.add_argument("--reads", type=int, default=20_000, help="random 4 KiB reads")
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--dir", type=Path, default=Path("/var/tmp"), help="host file system to test on"
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root (drop_caches and mounting need it)", file=sys.stderr)
        return 2
    targets: dict[str, Callable[[], contextlib.AbstractContextManager[Path]]] = {
        "native": lambda: native(args.dir),
        "passthrough cache=auto": lambda: passthrough(args.dir, "auto"),
        "passthrough cache=none": lambda: passthrough(args.dir, "none"),
    }
    print(
        f"on {args.dir}: {args.mib} MiB sequential in 1 MiB blocks, {args.reads} random 4 KiB "
        f"reads, {args.files} files; median of {args.repeat}; {os.cpu_count()} CPUs",
        flush=True,
    )
    started = time.monotonic()
    medians: dict[str, dict[str, float]] = {}
    for name, mount in targets.items():
        samples = run_target(name, mount, args)
        medians[name] = {key: statistics.median(values) for key, values in samples.items()}
    print()
    names = list(targets)
    print(
        f"{'workload':<13} {'unit':<6}" + "".join(f"{n:>24}" for n in names) + "   ratios vs native"
    )
    for workload, unit in UNITS.items():
        values = [medians[name][workload] for name in names]
        ratios = "  ".join(f"{v / values[0]:.2f}" for v in values[1:])
        print(
            f"{workload:<13} {unit:<6}" + "".join(f"{v:>24,.0f}" for v in values) + f"   {ratios}"
        )
    print(f"\n({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
