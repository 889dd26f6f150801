"""Every benchmark under bench/ still runs to its table: each is started as a user would start
it, with the smallest sizes, and must exit 0 having printed its last figures. The figures are
not judged (benchmarks print ratios; tests never time anything)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
N = r"[\d,.]+"  # one printed figure
SMALL = ["--repeat", "1", "--mib", "4", "--files", "20"]

guest = pytest.mark.guest
CASES = [
    # (benchmark, arguments, what its output ends with)
    ("virtio_request_cost", ["--workload", "meta", "write", "read", "--requests", "40",
                             "--repeat", "1"],
     rf"read inflight 4: vfsframe {N} MiB/s {N} µs CPU/MiB, virtiofsd {N} MiB/s"),
    ("virtio_request_cost", ["--workload", "meta", "--requests", "40", "--repeat", "1",
                             "--cold-cache", "1"],
     rf"on one CPU, 1 MiB walked after each completion\):\n  meta inflight 1: vfsframe {N}"),
    ("virtio_serving_step", ["--chains", "300", "--repeat", "1", "--cold-cache", "1"],
     rf"Python step, Python ring +{N} µs per chain"),
    ("session_io_cost", ["--requests", "20", "--repeat", "1"],
     rf"WRITE session.handle +{N} µs, bare syscall +{N} µs: {N}x"),
    ("session_meta_cost", ["--files", "20", "--repeat", "1", "--cold-cache", "1"],
     rf"per file \(9 requests\) +{N} µs"),
    ("host_passthrough", ["--mib", "8", "--reads", "100", "--files", "50", "--repeat", "1"],
     rf"unlink +ops/s +{N} +{N} +{N} +{N} +{N}"),
    ("host_memory", ["--files", "50", "--mib", "8", "--repeat", "1"],
     rf"3 middleware: chain {N} µs, whole session.handle {N} µs"),
    ("host_overlay", ["--files", "50", "--mib", "8"], rf"rm -rf everything +{N}s"),
    ("middleware_cost", [], rf"all five +{N} \(\+{N}\)"),
    ("chain_overhead", [], rf"3 middleware: chain {N} µs, whole session.handle {N} µs"),
    ("objectstore", ["--mib", "4", "--objects", "20", "--repeat", "1"],
     rf"list\+stat +names/s +{N} +{N} +{N}"),
    ("cache_objectstore", ["--files", "20"], rf"ls -lR warm +{N} s"),
    pytest.param("guest_virtio", [*SMALL, "--cpus", "2"],
                 rf"meta 4 procs +ops/s +{N} +{N} +{N} +{N} +{N}", marks=guest),
    pytest.param("guest_sandbox", [*SMALL, "--cpus", "2"], rf"server CPU +s +{N} +{N} +{N}",
                 marks=guest),
    pytest.param("guest_passthrough", SMALL, rf"rm -rf +ops/s +{N} +{N} +{N} +{N} +{N}",
                 marks=guest),
    pytest.param("guest_two_guests", ["--repeat", "1"],
                 rf"virtiofsd cache=none \(2 processes\) +{N} +{N} +{N}", marks=guest),
    pytest.param("guest_rootfs", ["--repeat", "1"], rf"whole workload +s vfsframe +{N} +{N}",
                 marks=guest),
]  # fmt: skip


@pytest.mark.parametrize(("bench", "args", "last_figures"), CASES)
def test_benchmark_runs_to_its_table(bench: str, args: list[str], last_figures: str) -> None:
    run = subprocess.run([sys.executable, str(BENCH / f"{bench}.py"), *args],
                         capture_output=True, text=True, timeout=900)  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert re.search(last_figures, run.stdout), (last_figures, run.stdout[-2000:])
