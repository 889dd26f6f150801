"""Boot a TCG guest whose root file system is a virtio-fs share, and time it.

The kernel mounts the share itself (`rootfstype=virtiofs root=TAG rw`, no initramfs) and runs
a workload script placed in the tree as init (PID 1). The script reports like the initramfs
guests (`CHECK` / `RESULT` lines, see `guestvm.parse_serial`) plus `FIGURE name value` lines for
measurements, and prints `ROOTFS-INIT` first: the time from QEMU's start to that line is the
boot time to the first command.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vfsframe.testing.guestvm import GuestResult, GuestVM, Share, parse_serial

# Where the workload goes in the guest's tree, and the script the kernel runs as init.
WORKLOAD_DIR = "vfsframe"
INIT = f"/{WORKLOAD_DIR}/init.sh"
FIRST_LINE = "ROOTFS-INIT"


def kernel_args(root_tag: str) -> str:
    # panic=-1 + QEMU -no-reboot: if init dies the VM exits at once instead of hanging.
    # no_timer_check: on a busy host a TCG guest can miss the IO-APIC timer check and panic.
    return (
        f"console=ttyS0 rootfstype=virtiofs root={root_tag} rw init={INIT} "
        "quiet loglevel=1 panic=-1 oops=panic no_timer_check"
    )


def install_workload(tree: Path, source: Path, env: dict[str, str]) -> None:
    """Copy the workload scripts in `source` into tree/vfsframe/, with an `env` file that
    init.sh sources (the share tags the guest mounts)."""
    dest = tree / WORKLOAD_DIR
    shutil.copytree(source, dest, dirs_exist_ok=True)
    (dest / "init.sh").chmod(0o755)
    (dest / "env").write_text("".join(f"{key}={value}\n" for key, value in env.items()))


@dataclass
class RootfsRun:
    """A finished boot: what the guest reported, and how long it took to start."""

    guest: GuestResult
    boot_seconds: float | None  # QEMU start -> the init script's first line; None: never
    figures: dict[str, float] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.guest.finished


def parse_figures(serial: str) -> dict[str, float]:
    figures: dict[str, float] = {}
    for line in serial.splitlines():
        if m := re.match(r"FIGURE (\S+) (\S+)\s*$", line.strip("\r")):
            figures[m.group(1)] = float(m.group(2))
    return figures


def boot_from_share(
    root: Share,
    extra: Sequence[Share],
    workdir: Path,
    kernel: Path,
    timeout: float,
    memory_mb: int = 1024,
    cpus: int = 2,
) -> RootfsRun:
    """Boot with `root` as the root file system (its tree must hold the workload, see
    `install_workload`) and `extra` shares attached; wait for the power-off."""
    vm = GuestVM(
        None, [root, *extra], workdir, memory_mb=memory_mb, cpus=cpus, kernel=kernel,
        kernel_args=kernel_args(root.tag), init_line=FIRST_LINE,
    )  # fmt: skip
    try:
        vm.boot()
        reached = vm.wait_for(f"^{FIRST_LINE}", timeout)
        boot = time.monotonic() - vm.started_at if reached else None
        remaining = max(timeout - (time.monotonic() - vm.started_at), 1.0)
        guest = vm.wait(remaining)
    finally:
        vm.kill()
    checks, results = parse_serial(guest.serial)
    guest.checks, guest.results = checks, results
    return RootfsRun(guest, boot, parse_figures(guest.serial))
