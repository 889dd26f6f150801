"""Guest benchmark: a Linux guest (QEMU TCG) on a passthrough share served by `vfsframe serve`,
against the reference C virtiofsd (`/usr/lib/qemu/virtiofsd`) over an equivalent directory, in
the same run, same guest kernel, same workload.

Run as root:  .venv/bin/python bench/guest_passthrough.py [--mib 256] [--files 500] [--repeat 1]

The guest times each workload with /proc/uptime (10 ms resolution) and drops its page cache
before reading; the host drops its caches too. The issue's target: at least 100% of the
reference. TCG emulates the guest CPU, so absolute figures are far below a KVM guest's; the
ratio is what to read.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "guest"))

from servers import ReferenceVirtiofsd, Server, VfsframePassthrough, restart

from bench.common import drop_caches, fresh_filesystem
from vfsframe.testing.guestvm import Share, fetch_kernel, run_guest

GUEST_SCRIPT = r"""
now() { cut -d' ' -f1 /proc/uptime; }
elapsed() { echo "$2 $1" | awk '{printf "%.2f", $1 - $2}'; }
check mount "mount -t virtiofs $TAG /mnt/a"
t0=$(now); dd if=/dev/zero of=/mnt/a/seq bs=1M count=$MIB conv=fsync 2>/dev/null; t1=$(now)
result seq_write "$(elapsed $t0 $t1)"
sync; echo 3 > /proc/sys/vm/drop_caches
t0=$(now); dd if=/mnt/a/seq of=/dev/null bs=1M 2>/dev/null; t1=$(now)
result seq_read "$(elapsed $t0 $t1)"
mkdir /mnt/a/many
t0=$(now); i=0; while [ $i -lt $FILES ]; do : > /mnt/a/many/f$i; i=$((i+1)); done; t1=$(now)
result create "$(elapsed $t0 $t1)"
echo 3 > /proc/sys/vm/drop_caches
t0=$(now); ls -l /mnt/a/many > /dev/null; t1=$(now)
result stat "$(elapsed $t0 $t1)"
t0=$(now); rm -rf /mnt/a/many; t1=$(now)
result unlink "$(elapsed $t0 $t1)"
rm -f /mnt/a/seq
check umount "umount /mnt/a"
"""


def run_once(server: Server, workdir: Path, kernel: Path, mib: int, files: int) -> dict[str, float]:
    server.start()
    try:
        drop_caches()
        script = f"TAG=data\nMIB={mib}\nFILES={files}\n{GUEST_SCRIPT}"
        share = Share("data", server.socket, server.request_queues)
        result = run_guest(script, [share], workdir / "vm", timeout=900,
                           before_retry=lambda: restart(server), kernel=kernel)  # type: ignore[arg-type]  # fmt: skip
    finally:
        server.stop()
    if not result.finished or result.failed():
        raise RuntimeError(f"guest run failed: {result.failed()}\n{result.serial[-2000:]}")
    seconds = {name: max(float(value), 0.01) for name, value in result.results.items()}
    return {
        "seq write": mib * (1 << 20) / 1e6 / seconds["seq_write"],
        "seq read": mib * (1 << 20) / 1e6 / seconds["seq_read"],
        "create": files / seconds["create"],
        "stat": files / seconds["stat"],
        "unlink": files / seconds["unlink"],
    }


UNITS = {
    "seq write": "MB/s",
    "seq read": "MB/s",
    "create": "ops/s",
    "stat": "ops/s",
    "unlink": "ops/s",
}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"))
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root", file=sys.stderr)
        return 2
    kernel = fetch_kernel()
    base = Path(tempfile.mkdtemp(prefix="guest-bench-", dir=args.dir))
    targets = {
        "virtiofsd (C)": lambda d: ReferenceVirtiofsd(d),
        "vfsframe 1 queue": lambda d: VfsframePassthrough(d, request_queues=1),
        "vfsframe 2 queues": lambda d: VfsframePassthrough(d, request_queues=2),
    }
    print(f"guest: {args.mib} MiB dd in 1 MiB blocks, {args.files} files; median of {args.repeat}")
    medians: dict[str, dict[str, float]] = {}
    try:
        for name, make in targets.items():
            samples: dict[str, list[float]] = {}
            for index in range(args.repeat):
                workdir = base / f"{name.split()[0]}-{len(name)}-{index}"
                workdir.mkdir()
                with fresh_filesystem(workdir):
                    figures = run_once(make(workdir), workdir, kernel, args.mib, args.files)
                for key, value in figures.items():
                    samples.setdefault(key, []).append(value)
                print(
                    f"  {name}: " + ", ".join(f"{k} {v:,.0f}" for k, v in figures.items()),
                    flush=True,
                )
            medians[name] = {key: statistics.median(v) for key, v in samples.items()}
    finally:
        shutil.rmtree(base, ignore_errors=True)
    names = list(targets)
    print(
        f"\n{'workload':<10} {'unit':<6}" + "".join(f"{n:>20}" for n in names) + "   vs C virtiofsd"
    )
    for workload, unit in UNITS.items():
        values = [medians[name][workload] for name in names]
        ratios = "  ".join(f"{v / values[0]:.2f}" for v in values[1:])
        print(
            f"{workload:<10} {unit:<6}" + "".join(f"{v:>20,.0f}" for v in values) + f"   {ratios}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
