"""What the sandbox costs (issue 9): bench/guest_virtio.py's guest workload (sequential
write/read, 2,000-file metadata from 1 and 4 guest processes) over a passthrough share served
by `vfsframe serve` with the sandbox off (`--sandbox none --seccomp none`, capabilities kept)
and on (`--sandbox namespace --seccomp kill`, the default), in alternating order each round.
Per-round ratios on/off, medians over --repeat rounds; the target is a cost under 5%. The
server's own CPU time over each run (from /proc) is reported too: it measures the cost
directly, without the guest's noise.

Run as root:  .venv/bin/python bench/guest_sandbox.py [--repeat 3] [--mib 256] [--files 2000]
"""

from __future__ import annotations

import functools
import os
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "guest"))

from servers import Server, VfsframePassthrough

from bench.common import median_ratio
from bench.guest_virtio import (
    CPU_NOTE,
    UNITS,
    compare_servers,
    figure_text,
    run_once,
    workload_arguments,
)
from vfsframe.testing.guestvm import fetch_kernel

MODES = {
    "off": ("--sandbox", "none", "--seccomp", "none"),
    "on": ("--sandbox", "namespace", "--seccomp", "kill"),
}


def main() -> int:
    parser = workload_arguments(__doc__)
    parser.add_argument("--queues", type=int, default=1, help="request queues")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root (namespaces, drop_caches, QEMU memfd shares)", file=sys.stderr)
        return 2
    kernel = fetch_kernel()
    print(
        f"guest (TCG, {args.cpus} vCPUs), {args.queues} request queue(s): {args.mib} MiB dd, "
        f"{args.files} files; sandbox off vs on, {args.repeat} round(s), medians"
    )
    targets: dict[str, Callable[[Path], Server]] = {
        f"sandbox {mode}": functools.partial(
            VfsframePassthrough, request_queues=args.queues, args=flags
        )
        for mode, flags in MODES.items()
    }
    samples, ratios = compare_servers(
        targets,
        lambda server, workdir: run_once(server, workdir, kernel, args.mib, args.files, args.cpus),
        args.repeat,
        args.dir,
        alternate=True,
    )
    print(f"\n{'workload':<13} {'unit':<6}{'off':>12}{'on':>12}{'on/off':>9}")
    for workload, unit in UNITS.items():
        off, on = (statistics.median(samples[f"sandbox {m}"][workload]) for m in MODES)
        ratio = median_ratio(ratios["sandbox on"][workload])
        off_text, on_text = figure_text(workload, off), figure_text(workload, on)
        print(f"{workload:<13} {unit:<6}{off_text:>12}{on_text:>12}{ratio:>9.3f}")
    print("(on/off: median of the per-round ratios; 1.000 = no cost, 0.950 = 5% slower)")
    print(CPU_NOTE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
