"""Host-mount benchmark of the memory backend against tmpfs and bindfs (libfuse) over tmpfs.

Run as root:  .venv/bin/python bench/host_memory.py [--files 10000] [--mib 1024] [--repeat 3]

Every workload runs on all targets in the same run and is reported with its median over
--repeat runs, as a ratio against tmpfs and against bindfs. The vfsframe server runs as its own
process (`vfsframe mount`), as a user would run it. It also measures the per-request cost of
the session and the pluggy chain in-process, with 0 and 3 pass-through middleware.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.chain_overhead import measure_chain_overhead
from bench.common import collect_samples, drop_caches, timed, vfsframe_mount, wait_mounted

BLOCK = 1 << 20


@contextlib.contextmanager
def tmpfs(size: str = "3G") -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="bench-tmpfs-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)
        path.rmdir()


@contextlib.contextmanager
def bindfs_over_tmpfs() -> Iterator[Path]:
    with tmpfs() as source:
        mountpoint = Path(tempfile.mkdtemp(prefix="bench-bindfs-"))
        server = subprocess.Popen(["bindfs", "-f", str(source), str(mountpoint)])
        try:
            wait_mounted(mountpoint, server)
            yield mountpoint
        finally:
            subprocess.run(["umount", str(mountpoint)], check=False)
            server.wait(timeout=30)
            mountpoint.rmdir()


def vfsframe_memory(cache: str) -> contextlib.AbstractContextManager[Path]:
    backend = '[share.backend]\ntype = "memory"\ncapacity = "3GiB"\nmax_inodes = 2000000\n'
    return vfsframe_mount(backend, cache)


def metadata_workloads(root: Path, files: int) -> dict[str, float]:
    """ops/s of create+close, stat and unlink of ``files`` empty files."""
    directory = root / "meta"
    directory.mkdir()
    names = [str(directory / f"f{index:06d}") for index in range(files)]

    def create() -> None:
        for name in names:
            os.close(os.open(name, os.O_CREAT | os.O_WRONLY, 0o644))

    def stat_all() -> None:
        for name in names:
            os.stat(name)

    def unlink() -> None:
        for name in names:
            os.unlink(name)

    results = {"create": files / timed(create)}
    drop_caches()  # stat must ask the server, not the dentry cache
    results["stat"] = files / timed(stat_all)
    results["unlink"] = files / timed(unlink)
    directory.rmdir()
    return results


def sequential_workloads(root: Path, mib: int) -> dict[str, float]:
    """MB/s of a sequential write (ending with fsync) and read, in 1 MiB blocks."""
    path = root / "seq"
    block = os.urandom(BLOCK)

    def write() -> None:
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
        try:
            for _ in range(mib):
                os.write(fd, block)
            os.fsync(fd)
        finally:
            os.close(fd)

    buffer = bytearray(BLOCK)

    def read() -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            while os.readv(fd, [buffer]):
                pass
        finally:
            os.close(fd)

    results = {"seq write": mib * BLOCK / 1e6 / timed(write)}
    drop_caches()
    results["seq read"] = mib * BLOCK / 1e6 / timed(read)
    path.unlink()
    return results


def run_target(
    name: str,
    mount: Callable[[], contextlib.AbstractContextManager[Path]],
    args: argparse.Namespace,
) -> dict[str, list[float]]:
    def workloads(root: Path) -> dict[str, float]:
        return metadata_workloads(root, args.files) | sequential_workloads(root, args.mib)

    return collect_samples(name, mount, args.repeat, workloads)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0 or not shutil.which("bindfs"):
        print("run as root with bindfs installed (scripts/setup.sh installs it)", file=sys.stderr)
        return 2

    targets: dict[str, Callable[[], contextlib.AbstractContextManager[Path]]] = {
        "tmpfs": tmpfs,
        "bindfs": bindfs_over_tmpfs,
        "vfsframe cache=auto": lambda: vfsframe_memory("auto"),
        "vfsframe cache=always": lambda: vfsframe_memory("always"),
    }
    print(
        f"workloads: {args.files} files; {args.mib} MiB sequential in 1 MiB blocks; median of {args.repeat}"
    )
    medians: dict[str, dict[str, float]] = {}
    for name, mount in targets.items():
        samples = run_target(name, mount, args)
        medians[name] = {key: statistics.median(values) for key, values in samples.items()}

    units = {
        "create": "ops/s",
        "stat": "ops/s",
        "unlink": "ops/s",
        "seq write": "MB/s",
        "seq read": "MB/s",
    }
    print()
    print(
        f"{'workload':<10} {'unit':<6} "
        + " ".join(f"{name:>22}" for name in targets)
        + "   vfsframe/tmpfs  vfsframe/bindfs"
    )
    for workload, unit in units.items():
        row = " ".join(f"{medians[name][workload]:>22,.0f}" for name in targets)
        ratios = []
        for name in targets:
            if name.startswith("vfsframe"):
                value = medians[name][workload]
                ratios.append(
                    f"{value / medians['tmpfs'][workload]:.2f}/{value / medians['bindfs'][workload]:.2f}"
                )
        print(f"{workload:<10} {unit:<6} {row}   " + "  ".join(ratios) + "  (auto, always)")

    print()
    for line in measure_chain_overhead():
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
