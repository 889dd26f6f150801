"""One directory shared by two guests at once (issue 10).

Both guests (busybox initramfs, TCG) attach five virtio-fs devices, each a host directory
served to both of them: vfsframe passthrough with cache=auto and cache=none from ONE
`vfsframe serve` process (one share, `sockets = [A, B]`, one backend instance), vfsframe from two
`vfsframe serve` processes on the same directory, and the reference C virtiofsd (two processes)
with cache=auto and cache=none. One boot of the pair runs every scenario on every device
(tests/usecases/two_guests.sh); the tests below read what it left. The cross-guest visibility
figures are logged (and printed by bench/guest_two_guests.py).
"""

from __future__ import annotations

import collections
import logging
import math
from pathlib import Path

import pytest

from vfsframe.testing.guestvm import fetch_kernel

from .two_guests import APPENDS, KINDS, ROUNDS, DeviceKind, TwoGuestRun, run_two_guests

pytestmark = [pytest.mark.guest, pytest.mark.timeout(1800)]
log = logging.getLogger(__name__)

BY_TAG = {kind.tag: kind for kind in KINDS}
LOCKING = [kind.tag for kind in KINDS if kind.locks]
ATTR_TIMEOUT_MS = 1000  # cache=auto's attribute and entry timeout (vfsframe and virtiofsd)
TCG_SLACK_MS = 1500  # what a contended TCG guest may add to a wait


@pytest.fixture(scope="module")
def kernel() -> Path:
    return fetch_kernel()


@pytest.fixture(scope="module")
def run(kernel: Path, tmp_path_factory: pytest.TempPathFactory) -> TwoGuestRun:
    workdir = tmp_path_factory.mktemp("twoguests")
    result = run_two_guests(workdir, kernel)
    lines = [f"{'device':<10} {'server':<40} {'hop ms':>8} {'close→whole ms':>15} {'max':>8}"]
    for kind in KINDS:
        f = result.figures(kind)
        lines.append(
            f"{kind.tag:<10} {kind.label:<40} {f['hop_ms']:>8.1f} "
            f"{f['close_to_whole_ms']:>15.1f} {f['close_to_whole_max_ms']:>8.1f}"
        )
    (workdir / "figures.txt").write_text("\n".join(lines) + "\n")
    log.warning("cross-guest visibility (%s):\n%s", workdir / "figures.txt", "\n".join(lines))
    return result


def _context(run: TwoGuestRun) -> str:
    return "\n".join(
        [f"=== guest {g}\n{r.serial[-2500:]}" for g, r in run.guests.items()] + [run.server_logs()]
    )


def test_both_guests_ran_every_scenario(run: TwoGuestRun) -> None:
    for guest, result in run.guests.items():
        assert result.finished, f"guest {guest} did not finish\n{_context(run)}"
        assert result.checks, _context(run)
        assert not result.failed(), (guest, result.failed(), _context(run))
        for kind in KINDS:
            assert f"DEVICE-DONE {kind.tag}" in result.serial
    # vfsframe servers stop cleanly (the C virtiofsd leaves with its guest, also status 0).
    assert all(status == 0 for status in run.statuses.values()), run.statuses


@pytest.mark.parametrize("tag", [k.tag for k in KINDS])
def test_close_to_open(run: TwoGuestRun, tag: str) -> None:
    """A writes a file and closes it; B reads it whole: at once with cache=none, within the
    attribute timeout with cache=auto (B may read a stale size, hence a prefix, until then)."""
    kind: DeviceKind = BY_TAG[tag]
    assert run.guests["A"].checks.get(f"{tag}.c2o-writer") == "ok", _context(run)
    assert run.guests["B"].checks.get(f"{tag}.c2o-reader") == "ok", _context(run)
    reader = run.result("B", f"{tag}.c2o-reader")
    if kind.cache == "none":
        assert reader["whole_at_once"] == ROUNDS, reader
    else:
        assert reader["stale_ms_max"] <= ATTR_TIMEOUT_MS + TCG_SLACK_MS, reader
    assert not math.isnan(run.figures(kind)["close_to_whole_ms"])


@pytest.mark.parametrize("tag", [k.tag for k in KINDS])
def test_append_writers_in_both_guests_lose_no_line(run: TwoGuestRun, tag: str) -> None:
    lines = (run.dirs[tag] / "append" / "log").read_text().splitlines()
    counts = collections.Counter(lines)
    want = {f"{guest} append {i}" for guest in "AB" for i in range(1, APPENDS + 1)}
    assert set(counts) == want, sorted(set(counts) ^ want)[:10]
    assert max(counts.values()) == 1 and len(lines) == 2 * APPENDS
    # Both guests then saw every line.
    for guest in "AB":
        assert run.guests[guest].checks.get(f"{tag}.append-seen-{guest}") == "ok"


@pytest.mark.parametrize("tag", LOCKING)
def test_posix_lock_in_one_guest_blocks_the_other(run: TwoGuestRun, tag: str) -> None:
    """A holds an F_SETLKW write lock for 3 s; B's F_SETLK meanwhile fails, B's F_SETLKW
    waits until A unlocks; the critical sections do not overlap."""
    assert run.guests["B"].results.get(f"{tag}.trylock-while-held") == "rc=3"
    assert run.guests["B"].checks.get(f"{tag}.lock-B") == "ok", _context(run)
    waited = run.result("B", f"{tag}.lock-B")["waited_ms"]
    assert waited >= 1000, f"B's SETLKW returned after {waited} ms while A held the lock"
    content = (run.dirs[tag] / "lock" / "file").read_text()
    assert content == "A got\nA put\nB got\nB put\n"


@pytest.mark.parametrize("tag", [k.tag for k in KINDS])
def test_directory_listings_converge(run: TwoGuestRun, tag: str) -> None:
    for guest in "AB":
        checks = run.guests[guest].checks
        assert checks.get(f"{tag}.list-full-{guest}") == "ok", _context(run)
        assert checks.get(f"{tag}.list-empty-{guest}") == "ok", _context(run)
    assert list((run.dirs[tag] / "list").iterdir()) == []


def test_cache_none_shows_a_change_sooner_than_cache_auto(run: TwoGuestRun) -> None:
    """The point of cache=none: no attribute timeout between A's close and B's read."""
    none = run.figures(BY_TAG["vfnone"])["close_to_whole_max_ms"]
    assert none < ATTR_TIMEOUT_MS / 2, none
