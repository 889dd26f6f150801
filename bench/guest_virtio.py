"""Guest benchmark for the virtio-fs device engine (issue 3): a Linux guest under QEMU TCG mounts
a passthrough share served by `vfsframe serve` and, in the same run, an equivalent directory
served by the reference C virtiofsd (`/usr/lib/qemu/virtiofsd`, one request queue). Same guest
kernel, same busybox workload script, one boot per server configuration per round:

- 256 MiB sequential write (dd, conv=fsync) and read-back after drop_caches (guest and host);
- create / stat / rename / unlink of 2,000 files from one guest process;
- the same 2,000 files split over 4 parallel guest processes;

for the reference, vfsframe with 1 request queue and vfsframe with 4 (QEMU num-request-queues=4).
Each round boots all three back to back and computes ratios vfsframe/reference from that round;
medians over --repeat rounds are printed (TCG guests are noisy: one run can differ by 2x).
The guest clock is /proc/uptime (10 ms; busybox date has no %N), so use enough files.
Each server's share is on a new ext4 file system of its own (a loop device; see
`bench.common.fresh_filesystem`): on the host's file system a create cost what earlier runs had
deleted, whichever server it was.

Run as root:  .venv/bin/python bench/guest_virtio.py [--repeat 3] [--mib 256] [--files 2000]
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

# The repo root (for `bench`) and tests/guest (the guest tests' server classes) on the path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "guest"))

from servers import ReferenceVirtiofsd, Server, VfsframePassthrough, restart

from bench.common import (
    Figures,
    Samples,
    compare_in_rounds,
    cpu_seconds,
    drop_caches,
    fresh_filesystem,
    print_comparison,
)
from vfsframe.testing.guestvm import GuestResult, Share, fetch_kernel, run_guest

# Phases run in lock step: every worker of a phase starts together and the phase ends when the
# last one does, so the 4-process figures are aggregate throughput, not per-process latency.
# Shell builtins (`: >`, `[ -f ]`) avoid a fork per file; rename and unlink use one mv / rm per
# worker so that the guest's fork cost (large under TCG) does not drown the server's share.
GUEST_SCRIPT = r"""
now() { cut -d' ' -f1 /proc/uptime; }
elapsed() { echo "$1 $2" | awk '{printf "%.2f", $2 - $1}'; }
coldcache() { sync; echo 3 > /proc/sys/vm/drop_caches; }
check mount "mount -t virtiofs $TAG /mnt/a"

t0=$(now); dd if=/dev/zero of=/mnt/a/seq bs=1M count=$MIB conv=fsync 2>/dev/null; t1=$(now)
result seq_write "$(elapsed $t0 $t1)"
coldcache
t0=$(now); dd if=/mnt/a/seq of=/dev/null bs=1M 2>/dev/null; t1=$(now)
result seq_read "$(elapsed $t0 $t1)"
rm -f /mnt/a/seq

work() {  # work PHASE DIR COUNT
    cd "$2" || return 1
    i=0
    case $1 in
    create) while [ $i -lt $3 ]; do : > f$i; i=$((i+1)); done ;;
    stat) while [ $i -lt $3 ]; do [ -f f$i ] || echo "MISSING $2/f$i"; i=$((i+1)); done ;;
    rename) mkdir ../r${2##*/} && mv f* ../r${2##*/}/ ;;
    unlink) cd ../r${2##*/} && rm -f f* ;;
    esac
}
meta() {  # meta LABEL NPROC: FILES files split over NPROC workers, one directory each
    per=$((FILES / $2))
    j=0; while [ $j -lt $2 ]; do mkdir -p /mnt/a/$1/d$j; j=$((j+1)); done
    for phase in create stat rename unlink; do
        coldcache  # lookups and getattrs reach the server, not the guest's dentry cache
        t0=$(now)
        j=0; while [ $j -lt $2 ]; do work $phase /mnt/a/$1/d$j $per & j=$((j+1)); done
        wait
        t1=$(now)
        result ${1}_$phase "$(elapsed $t0 $t1)"
    done
    result ${1}_left "$(find /mnt/a/$1 -type f | wc -l)"
    rm -rf /mnt/a/$1
}
meta m1 1
meta m4 4
check umount "umount /mnt/a"
"""

PHASES = ("create", "stat", "rename", "unlink")
# Row name -> unit; the table and the ratios follow this order.
UNITS = {
    "seq write": "MB/s",
    "seq read": "MB/s",
    **{phase: "ops/s" for phase in PHASES},
    "meta 1 proc": "ops/s",
    **{f"4p {phase}": "ops/s" for phase in PHASES},
    "meta 4 procs": "ops/s",
    "server CPU": "s",
}
# Figures print as whole numbers, but the server's CPU seconds need their tenths.
DIGITS = {"s": 1}
CPU_NOTE = (
    "(server CPU: user + system seconds of the server's processes while the guest ran, boot "
    "included, the server's own start-up not; lower is better, so a ratio above 1 is a cost)"
)


def figure_text(workload: str, value: float) -> str:
    """A figure as the tables print it: whole numbers, the server's CPU seconds in tenths."""
    return f"{value:,.{DIGITS.get(UNITS.get(workload, ''), 0)}f}"


def queue_counts(server: Server) -> str:
    served = re.findall(r"requests served: ([^)]*)\)", server.log())
    return served[-1] if served else ""


def serve_guest(
    server: Server, script: str, workdir: Path, kernel: Path, cpus: int, timeout: float = 1800
) -> tuple[GuestResult, float]:
    """Start ``server``, boot a guest that runs ``script`` on its share, stop the server; the
    guest's result and the server's CPU seconds while the guest ran. The server's own start-up
    (0.3 s of Python imports for vfsframe) is not counted: it is over before QEMU starts."""
    share = Share(server.tag, server.socket, server.request_queues)
    server.start()
    try:
        drop_caches()  # host page cache: reads must reach the disk through the server
        started = cpu_seconds(server.proc.pid)  # type: ignore[union-attr]
        # A boot that dies before /init is tried again on a fresh server (whose start-up then
        # stands in for the first one's).
        result = run_guest(script, [share], workdir / "vm", timeout=timeout,
                           before_retry=lambda: restart(server), kernel=kernel, cpus=cpus)  # type: ignore[arg-type]  # fmt: skip
        used = cpu_seconds(server.proc.pid) - started  # type: ignore[union-attr]
    finally:
        server.stop()
    return result, used


def run_once(
    server: Server, workdir: Path, kernel: Path, mib: int, files: int, cpus: int
) -> dict[str, float]:
    script = f"TAG={server.tag}\nMIB={mib}\nFILES={files}\n{GUEST_SCRIPT}"
    result, server_cpu = serve_guest(server, script, workdir, kernel, cpus)
    missing = [line for line in result.serial.splitlines() if line.startswith("MISSING")]
    left = (result.results.get("m1_left"), result.results.get("m4_left"))
    if not result.finished or result.failed() or missing or left != ("0", "0"):
        raise RuntimeError(
            f"guest run failed: {result.failed()} {missing[:3]} left={left}\n"
            f"{result.serial[-2000:]}\n{server.log()[-2000:]}"
        )
    # 10 ms clock: a phase that took "0" took less than one tick.
    secs = {name: max(float(value), 0.01) for name, value in result.results.items()}
    mb = mib * (1 << 20) / 1e6
    figures = {"seq write": mb / secs["seq_write"], "seq read": mb / secs["seq_read"]}
    for label, prefix in (("meta 1 proc", ""), ("meta 4 procs", "4p ")):
        key = "m1" if prefix == "" else "m4"
        for phase in PHASES:
            figures[f"{prefix}{phase}"] = files / secs[f"{key}_{phase}"]
        figures[label] = len(PHASES) * files / sum(secs[f"{key}_{p}"] for p in PHASES)
    figures["server CPU"] = server_cpu
    return figures


def workload_arguments(description: str | None) -> argparse.ArgumentParser:
    """The options of a benchmark running this workload in guests."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3, help="rounds (medians are quoted)")
    parser.add_argument("--mib", type=int, default=256, help="sequential file size, MiB")
    parser.add_argument("--files", type=int, default=2000, help="files in the metadata workload")
    # Linux maps request queues to vCPUs: with 2 vCPUs only 2 of 4 queues get requests.
    parser.add_argument("--cpus", type=int, default=2, help="guest vCPUs (TCG threads)")
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"), help="host scratch dir")
    return parser


def compare_servers(
    targets: dict[str, Callable[[Path], Server]],
    run: Callable[[Server, Path], Figures],
    repeat: int,
    scratch: Path,
    alternate: bool = False,
) -> tuple[Samples, Samples]:
    """`compare_in_rounds` for servers: each is made in a directory of its own under
    ``scratch``, on a new file system, and ``run``; the log line says what each queue served."""
    base = Path(tempfile.mkdtemp(prefix="guest-bench-", dir=scratch))

    def boot(index: int, make: Callable[[Path], Server], round_: int) -> tuple[Figures, str]:
        workdir = base / f"r{round_}-s{index}"
        workdir.mkdir()
        with fresh_filesystem(workdir):
            server = make(workdir)
            figures = run(server, workdir)
            counts = queue_counts(server)  # its log is on the file system
        return figures, f"  [served {counts}]" if counts else ""

    rounds = {
        name: functools.partial(boot, index, make)
        for index, (name, make) in enumerate(targets.items())
    }
    try:
        return compare_in_rounds(rounds, repeat, figure_text, alternate)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def compare_with_reference(
    targets: dict[str, Callable[[Path], Server]],
    run_once: Callable[[Server, Path, Path, int, int, int], Figures],
    units: dict[str, str],
    args: argparse.Namespace,
) -> None:
    """Run a guest workload (``run_once``, with `workload_arguments`' options) on every target
    in rounds and print the table of figures and ratios to the first target, the reference."""
    kernel = fetch_kernel()
    print(
        f"guest (TCG, {args.cpus} vCPUs): {args.mib} MiB dd in 1 MiB blocks, {args.files} files; "
        f"{args.repeat} round(s), medians"
    )
    samples, ratios = compare_servers(
        targets,
        lambda server, workdir: run_once(server, workdir, kernel, args.mib, args.files, args.cpus),
        args.repeat,
        args.dir,
    )
    print_comparison(samples, ratios, units, figure_text, "C")
    print(CPU_NOTE)


def main() -> int:
    parser = workload_arguments(__doc__)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root (drop_caches, QEMU memfd shares)", file=sys.stderr)
        return 2
    if args.files % 4:
        parser.error("--files must split evenly over 4 processes")
    targets: dict[str, Callable[[Path], Server]] = {
        "virtiofsd (C)": ReferenceVirtiofsd,
        "vfsframe 1q": lambda d: VfsframePassthrough(d, request_queues=1),
        "vfsframe 4q": lambda d: VfsframePassthrough(d, request_queues=4),
    }
    compare_with_reference(targets, run_once, UNITS, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
