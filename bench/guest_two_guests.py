"""Cross-guest visibility delay: two TCG guests share one host directory, served by vfsframe
(cache=auto and cache=none from one `vfsframe serve` with `sockets = [A, B]`; cache=auto from
two processes) and by the reference C virtiofsd (two processes; cache=auto and cache=none), all
in the same run (the harness of tests/usecases/test_two_guests.py, every scenario included).

Figures, from guest A's clock (two guests' clocks cannot be compared):
- hop: a new file made in one guest until the other finds it (marker ping-pong / 2);
- close→whole: A closes a rewritten file until B, polling every 2 ms, has read it whole
  (A's round trip minus one hop), mean and max over 6 rounds. With cache=auto the other guest
  keeps the old size for up to the 1 s attribute timeout; with cache=none it reads the server.

Run as root:  .venv/bin/python bench/guest_two_guests.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.usecases.two_guests import KINDS, run_two_guests
from vfsframe.testing.guestvm import fetch_kernel

COLUMNS = ("hop_ms", "close_to_whole_ms", "close_to_whole_max_ms")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs (medians are printed)")
    args = parser.parse_args()
    kernel = fetch_kernel()
    runs: dict[str, list[dict[str, float]]] = {kind.tag: [] for kind in KINDS}
    for number in range(1, args.repeat + 1):
        workdir = Path(tempfile.mkdtemp(prefix="bench-two-guests-"))
        try:
            run = run_two_guests(workdir, kernel)
            failed = {g: r.failed() for g, r in run.guests.items() if r.failed() or not r.finished}
            if failed:
                print(f"run {number}: guests failed: {failed}", file=sys.stderr)
                return 1
            for kind in KINDS:
                runs[kind.tag].append(run.figures(kind))
                figures = " ".join(f"{k}={v:.1f}" for k, v in runs[kind.tag][-1].items())
                print(f"run {number}/{args.repeat} {kind.tag}: {figures}", file=sys.stderr)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"{'server':<40} {'hop ms':>8} {'close→whole ms':>15} {'max ms':>8}   (median of {args.repeat})"
    )
    for kind in KINDS:
        row = [statistics.median(r[column] for r in runs[kind.tag]) for column in COLUMNS]
        print(f"{kind.label:<40} {row[0]:>8.1f} {row[1]:>15.1f} {row[2]:>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
