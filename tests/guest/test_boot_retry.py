"""GuestVM.boot boots again only when the guest kernel died before /init ran; a panic after
the script started, or in the last boot allowed, is left for the test to see."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from vfsframe.testing.guestvm import DEFAULT_KERNEL_ARGS, GuestVM

PANIC = "[    1.84] Kernel panic - not syncing: Fatal exception in interrupt\n"
STARTED = "GUEST-START 6.12 cpus=2\n"


def scripted_boots(monkeypatch: pytest.MonkeyPatch, *consoles: str) -> list[str]:
    """Each GuestVM.start writes the next console and leaves an exited QEMU; the list of
    consoles booted so far."""
    pending, booted = list(consoles), []

    def start(vm: GuestVM) -> None:
        booted.append(pending.pop(0))
        vm.serial_path.write_text(booted[-1])
        vm.proc = subprocess.Popen(["true"])
        vm.proc.wait()

    monkeypatch.setattr(GuestVM, "start", start)
    return booted


def guest(tmp_path: Path) -> GuestVM:
    return GuestVM("true", [], tmp_path, kernel=tmp_path / "vmlinuz")


def test_an_early_panic_boots_again(monkeypatch, tmp_path) -> None:
    booted = scripted_boots(monkeypatch, PANIC, STARTED)
    retries: list[int] = []
    vm = guest(tmp_path)
    vm.boot(before_retry=lambda: retries.append(1))
    assert (booted, retries, vm.early_panics) == ([PANIC, STARTED], [1], [PANIC])


def test_a_panic_after_init_started_is_not_retried(monkeypatch, tmp_path) -> None:
    booted = scripted_boots(monkeypatch, STARTED + PANIC, STARTED)
    vm = guest(tmp_path)
    vm.boot()
    assert booted == [STARTED + PANIC]
    assert "Kernel panic" in vm.serial()


def test_every_boot_panicking_ends_with_the_last_console(monkeypatch, tmp_path) -> None:
    booted = scripted_boots(monkeypatch, PANIC, PANIC, PANIC)
    retries: list[int] = []
    vm = guest(tmp_path)
    vm.boot(attempts=3, before_retry=lambda: retries.append(1))
    assert (len(booted), len(retries), len(vm.early_panics)) == (3, 2, 3)
    assert vm.wait(1).checks == {}


def test_a_qemu_that_exits_without_a_panic_is_not_retried(monkeypatch, tmp_path) -> None:
    booted = scripted_boots(monkeypatch, "qemu: could not open kernel\n", STARTED)
    guest(tmp_path).boot()
    assert len(booted) == 1


def test_a_root_on_a_share_retries_only_a_panic_inside_the_initcalls(monkeypatch, tmp_path):
    # No initramfs: the kernel mounts its root from a share, so a panic after its initcalls
    # (say, the root cannot be mounted) may be the server's doing and must stay a failure.
    in_initcall = "Call Trace:\n do_one_initcall+0x5b/0x320\n" + PANIC
    mounting_root = "VFS: Unable to mount root fs\n" + PANIC
    booted = scripted_boots(monkeypatch, in_initcall, mounting_root, "ROOTFS-INIT\n")
    vm = GuestVM(None, [], tmp_path, kernel=tmp_path / "vmlinuz", init_line="ROOTFS-INIT")
    vm.boot()
    assert booted == [in_initcall, mounting_root]


@pytest.mark.guest
def test_a_real_kernel_panicking_before_init_is_booted_twice(kernel, tmp_path) -> None:
    # No such init: the kernel falls back to mounting a root it does not have, and panics
    # before any of our userspace runs, as the TCG early-boot oopses do.
    args = DEFAULT_KERNEL_ARGS.replace("rdinit=/init", "rdinit=/no-such-init")
    vm = GuestVM("true", [], tmp_path, memory_mb=256, kernel=kernel, kernel_args=args)
    retries: list[int] = []
    try:
        vm.boot(attempts=2, before_retry=lambda: retries.append(1))
        result = vm.wait(60)
    finally:
        vm.kill()
    assert len(vm.early_panics) == 2 and retries == [1]
    assert "Kernel panic" in result.serial and "GUEST-START" not in result.serial
