"""Guest benchmark for a root file system on a share (issue 10): a TCG guest boots Debian 12
(debootstrap minbase + perl, python3, sqlite3) with `rootfstype=virtiofs root=rootfs`, from a
passthrough share served by `vfsframe serve` and, in the same round, from the reference C
virtiofsd (`/usr/lib/qemu/virtiofsd`) over an identical copy of the tree. The guest runs the
rootfs test workload (tests/usecases/rootfs_workload/init.sh) as PID 1:

- boot to first command: QEMU start -> the init script's first line on the serial console
  (host clock), and the guest's own uptime at that line;
- SQLite insert rate: two processes inserting 300 rows each into one database, one
  transaction per row, in WAL mode (shared mmap + POSIX locks) and rollback-journal mode;
- the whole workload's wall time (boot to power-off).

Each round boots both servers back to back (alternating which goes first) and computes the
ratios vfsframe/reference from that round; medians over --repeat rounds are printed. Both use
one request queue and cache=auto. Boot time: lower is better; rates: higher is better.

The reference C virtiofsd (QEMU 7.2) leaves POSIX locks to the guest kernel (its default
no_posix_lock), while vfsframe's passthrough serves them as host locks (posix_locks = true), a
round trip per lock; SQLite takes several per transaction. --local-locks adds a third server,
vfsframe with posix_locks = false, to tell that cost from the rest.

Run as root:  .venv/bin/python bench/guest_rootfs.py [--repeat 3] [--local-locks]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.guest.servers import Server
from tests.usecases.rootfs_servers import ReferenceTree, VfsframeShare, passthrough_toml
from vfsframe.testing.guestvm import Share, fetch_kernel
from vfsframe.testing.rootfs import build_rootfs, copy_tree
from vfsframe.testing.rootfs_boot import boot_from_share, install_workload

WORKLOAD = Path(__file__).resolve().parent.parent / "tests" / "usecases" / "rootfs_workload"
TAG = "rootfs"
# Figure name -> (unit, True when higher is better).
FIGURES = {
    "boot to first command": ("s", False),
    "guest uptime at init": ("s", False),
    "SQLite WAL inserts": ("rows/s", True),
    "SQLite journal inserts": ("rows/s", True),
    "whole workload": ("s", False),
}


def one_boot(kind: str, cached: Path, workdir: Path, kernel: Path) -> dict[str, float]:
    workdir.mkdir()
    tree = copy_tree(cached, workdir / "tree")
    install_workload(tree, WORKLOAD, {"ROOT_TAG": TAG, "MEDIA_TAG": ""})
    server: Server
    if kind == "vfsframe":
        server = VfsframeShare(workdir, "vfsframe", TAG, passthrough_toml(tree))
    elif kind == "vfsframe-local-locks":
        backend = passthrough_toml(tree) + "posix_locks = false\n"
        server = VfsframeShare(workdir, "vfsframe", TAG, backend)
    else:
        server = ReferenceTree(workdir, TAG, tree)
    server.start()
    start = time.monotonic()
    try:
        run = boot_from_share(Share(TAG, server.socket), [], workdir / "vm", kernel, 1800.0)
    finally:
        server.stop()
    whole = time.monotonic() - start
    if not run.finished or run.guest.failed() or run.boot_seconds is None:
        raise RuntimeError(
            f"{kind} boot failed: {run.guest.failed()}\n{run.guest.serial[-2000:]}\n"
            f"{server.log()[-2000:]}"
        )
    return {
        "boot to first command": run.boot_seconds,
        "guest uptime at init": run.figures["init_uptime"],
        "SQLite WAL inserts": run.figures["wal_insert_rate"],
        "SQLite journal inserts": run.figures["delete_insert_rate"],
        "whole workload": whole,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3, help="rounds (medians are quoted)")
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"), help="host scratch dir")
    parser.add_argument(
        "--local-locks", action="store_true", help="also vfsframe with posix_locks = false"
    )
    args = parser.parse_args()
    kinds = ["vfsframe", "reference"] + (["vfsframe-local-locks"] if args.local_locks else [])
    kernel = fetch_kernel()
    cached = build_rootfs()
    samples: dict[str, dict[str, list[float]]] = {kind: {} for kind in kinds}
    ratios: dict[str, dict[str, list[float]]] = {kind: {} for kind in kinds if kind != "reference"}
    scratch = Path(tempfile.mkdtemp(prefix="bench-rootfs-", dir=args.dir))
    try:
        for round_number in range(args.repeat):
            order = kinds[:: 1 if round_number % 2 == 0 else -1]
            figures = {}
            for kind in order:
                workdir = scratch / f"{kind}-{round_number}"
                figures[kind] = one_boot(kind, cached, workdir, kernel)
                shutil.rmtree(workdir, ignore_errors=True)
                for name, value in figures[kind].items():
                    samples[kind].setdefault(name, []).append(value)
                shown = ", ".join(f"{k} {v:.1f}" for k, v in figures[kind].items())
                print(f"  round {round_number + 1} {kind}: {shown}", flush=True)
            for kind, per_figure in ratios.items():
                for name in FIGURES:
                    ratio = figures[kind][name] / figures["reference"][name]
                    per_figure.setdefault(name, []).append(ratio)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"\nmedians over {args.repeat} round(s); ratio = server / reference, per round")
    print(f"{'figure':<24} {'unit':>7} {'server':<22} {'median':>8} {'ratio':>7}  better")
    for name, (unit, higher) in FIGURES.items():
        for kind in kinds:
            value = statistics.median(samples[kind][name])
            ratio = f"{statistics.median(ratios[kind][name]):7.2f}" if kind in ratios else ""
            better = "higher" if higher else "lower"
            print(f"{name:<24} {unit:>7} {kind:<22} {value:>8.1f} {ratio:>7}  {better}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
