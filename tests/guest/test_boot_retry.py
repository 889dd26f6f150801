"""boot_workload boots again (against a restarted server) only when the guest kernel died in
early boot, before the workload reported anything; any other failure stays a failure."""

from __future__ import annotations

from pathlib import Path

import pytest

from vfsframe.testing.guestvm import GuestResult

from . import servers

PANIC = "[    1.55] Kernel panic - not syncing: Fatal exception in interrupt\n"
DONE = GuestResult(0, "GUEST-DONE\n", checks={"mount": "ok"})


class FakeServer:
    tag, request_queues = "data", 1

    def __init__(self, tmp_path: Path) -> None:
        self.socket = tmp_path / "s.sock"
        self.restarts = 0

    def stop(self) -> None:
        pass

    def start(self) -> None:
        self.restarts += 1

    def log(self) -> str:
        return ""


def booting(monkeypatch: pytest.MonkeyPatch, *results: GuestResult) -> list[int]:
    queue, boots = list(results), []

    def run_guest(*args: object, **kwargs: object) -> GuestResult:
        boots.append(1)
        return queue.pop(0)

    monkeypatch.setattr(servers, "run_guest", run_guest)
    return boots


def test_early_guest_panic_boots_again(monkeypatch, tmp_path) -> None:
    boots = booting(monkeypatch, GuestResult(None, PANIC), DONE)
    server = FakeServer(tmp_path)
    assert servers.boot_workload(server, tmp_path, tmp_path / "k") is DONE  # type: ignore[arg-type]
    assert (len(boots), server.restarts) == (2, 1)


def test_a_panic_after_the_workload_started_is_a_failure(monkeypatch, tmp_path) -> None:
    booting(monkeypatch, GuestResult(None, PANIC, checks={"mount": "ok"}), DONE)
    with pytest.raises(AssertionError, match="did not finish"):
        servers.boot_workload(FakeServer(tmp_path), tmp_path, tmp_path / "k")  # type: ignore[arg-type]
