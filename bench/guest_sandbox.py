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

import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "guest"))

from servers import VfsframePassthrough

from bench.common import figures_line, fresh_filesystem, median_ratio, per_round_ratio
from bench.guest_virtio import (
    CPU_NOTE,
    UNITS,
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
    samples: dict[str, dict[str, list[float]]] = {mode: {} for mode in MODES}
    ratios: dict[str, list[float]] = {}
    base = Path(tempfile.mkdtemp(prefix="guest-sandbox-bench-", dir=args.dir))
    try:
        for round_ in range(args.repeat):
            order = list(MODES) if round_ % 2 == 0 else list(reversed(MODES))
            this: dict[str, dict[str, float]] = {}
            for mode in order:
                workdir = base / f"r{round_}-{mode}"
                workdir.mkdir()
                with fresh_filesystem(workdir):
                    server = VfsframePassthrough(
                        workdir, request_queues=args.queues, args=MODES[mode]
                    )
                    this[mode] = run_once(server, workdir, kernel, args.mib, args.files, args.cpus)
                for key, value in this[mode].items():
                    samples[mode].setdefault(key, []).append(value)
                print(f"  round {round_ + 1} sandbox {mode}: "
                      + figures_line(this[mode], figure_text), flush=True)  # fmt: skip
            for key in this["on"]:
                ratios.setdefault(key, []).append(
                    per_round_ratio(this["on"][key], this["off"][key])
                )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"\n{'workload':<13} {'unit':<6}{'off':>12}{'on':>12}{'on/off':>9}")
    for workload, unit in UNITS.items():
        off, on = (statistics.median(samples[m][workload]) for m in ("off", "on"))
        ratio = median_ratio(ratios[workload])
        off_text, on_text = figure_text(workload, off), figure_text(workload, on)
        print(f"{workload:<13} {unit:<6}{off_text:>12}{on_text:>12}{ratio:>9.3f}")
    print("(on/off: median of the per-round ratios; 1.000 = no cost, 0.950 = 5% slower)")
    print(CPU_NOTE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
