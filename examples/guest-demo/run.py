"""See a vfsframe share inside a Linux guest: serve it, boot a throwaway VM that mounts it.

    sudo .venv/bin/python examples/guest-demo/run.py                      # a shell in the guest
    sudo .venv/bin/python examples/guest-demo/run.py -- df -h /mnt        # run one command
    sudo .venv/bin/python examples/guest-demo/run.py --config examples/configs/metrics-log.toml

Starts `vfsframe serve` for one share of the config (on a socket of its own, so the config's
`socket` is not needed), builds a busybox initramfs with vfsframe.testing.guestvm, and boots
QEMU (TCG) with the share attached as a vhost-user-fs-pci device. The guest mounts it on
/mnt (`mount -t virtiofs TAG /mnt`), then either runs COMMAND there, printing its output and
exiting with its status, or gives you a shell on the console (leave with `exit` or Ctrl-D;
Ctrl-C goes to the guest). The server and QEMU are stopped on the way out, Ctrl-C included.

Needs QEMU, busybox-static and the guest kernel (scripts/setup.sh and .ci/install-guest.sh
install them; the kernel is fetched into ~/.cache/vfsframe/guest/ on first use).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from vfsframe.config import ConfigError, load_config
from vfsframe.testing.guestvm import GuestSetupError, GuestVM, Share, fetch_kernel

MOUNTPOINT = "/mnt"
# Seconds for the guest to boot, run the command and power off under TCG on a busy machine.
DEFAULT_TIMEOUT = 300.0
SOCKET_TIMEOUT = 90.0

# Serial console markers between which the command's output is printed.
BEGIN = "VFSFRAME-DEMO-BEGIN"
END = "VFSFRAME-DEMO-END"
MOUNT_FAILED = "VFSFRAME-DEMO-MOUNT-FAILED"


class DemoError(Exception):
    """Ends the demo with a message (and the logs that explain it)."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="run.py",
        description="Serve a vfsframe share and boot a throwaway QEMU guest that mounts it "
        "on /mnt; run COMMAND there, or get a shell.",
    )
    parser.add_argument(
        "--config", default="builtin:memory", help="config file (default builtin:memory)"
    )
    parser.add_argument("--share", metavar="TAG", help="which share, if the config has several")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds a COMMAND run may take, boot included (default {DEFAULT_TIMEOUT:.0f})",
    )
    parser.add_argument(
        "--workdir", type=Path, help="keep the logs, socket and initramfs here (default: temp)"
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARG...]")
    args = parser.parse_args(argv)
    if args.command[:1] == ["--"]:
        args.command = args.command[1:]
    return args


def choose_share(config: Any, tag: str | None) -> Any:
    tags = [share.tag for share in config.shares]
    if tag is None and len(tags) == 1:
        return config.shares[0]
    for share in config.shares:
        if share.tag == tag:
            return share
    raise DemoError(f"choose a share with --share TAG; the config has: {', '.join(tags)}")


def guest_script(tag: str, command: list[str]) -> str:
    """The guest's /check.sh: mount the share, then run the command or a shell in it."""
    mount = (
        f"mount -t virtiofs {shlex.quote(tag)} {MOUNTPOINT} || {{ echo {MOUNT_FAILED}; exit 1; }}\n"
        f"cd {MOUNTPOINT}\n"
    )
    if command:
        run = f'echo {BEGIN}\n{shlex.join(command)}\necho "{END} rc=$?"\n'
    else:
        run = (
            f"echo; echo 'vfsframe share {tag} is mounted on {MOUNTPOINT}; exit the shell "
            "to power off'\n"
            "export PS1='guest:$PWD# ' HOME=/root TERM=linux\n"
            "setsid cttyhack sh\n"
        )
    return f"{mount}{run}cd /\numount {MOUNTPOINT}\n"


class Server:
    """`vfsframe serve` for one share on our own socket; stopped by its pid."""

    def __init__(self, config: str, tag: str, workdir: Path) -> None:
        self.socket = workdir / "share.sock"
        self.log_path = workdir / "serve.log"
        cmd = [sys.executable, "-m", "vfsframe", "serve", config]
        cmd += ["--share", tag, "--socket-path", str(self.socket)]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def wait_listening(self) -> None:
        deadline = time.monotonic() + SOCKET_TIMEOUT
        while not self.socket.exists():
            if self.proc.poll() is not None:
                raise DemoError(f"vfsframe serve exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise DemoError(f"vfsframe serve did not listen within {SOCKET_TIMEOUT:.0f} s")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


def run_command(vm: GuestVM, timeout: float) -> int:
    """Boot, stream the command's output from the serial console, return its status."""
    vm.boot()
    deadline = time.monotonic() + timeout
    printed = 0  # console lines already handled
    inside = False
    while True:
        lines = vm.serial().replace("\r", "").split("\n")
        complete = lines[:-1]  # the last one may still be growing
        for line in complete[printed:]:
            if line == BEGIN:
                inside = True
            elif m := re.fullmatch(rf"{END} rc=(\d+)", line):
                vm.wait(60)  # it powers off by itself
                return int(m.group(1))
            elif line == MOUNT_FAILED:
                raise DemoError(f"the guest could not mount the share:\n{vm.serial()[-2000:]}")
            elif inside:
                print(line, flush=True)
        printed = len(complete)
        if vm.proc is not None and vm.proc.poll() is not None:
            raise DemoError(
                f"QEMU exited ({vm.proc.returncode}) before the command finished:\n"
                f"{vm.serial()[-2000:]}\n{vm.qemu_log()[-2000:]}"
            )
        if time.monotonic() > deadline:
            raise DemoError(f"the guest did not finish within {timeout:.0f} s")
        time.sleep(0.1)


def run_shell(vm: GuestVM) -> int:
    """Boot with the serial console on this terminal; return when the guest powers off."""
    cmd = vm.command()
    at = cmd.index("-serial")
    # The console on our stdio; signal=off so Ctrl-C reaches the guest's shell, not QEMU.
    cmd[at : at + 2] = ["-chardev", "stdio,id=console,signal=off", "-serial", "chardev:console"]
    vm.proc = subprocess.Popen(cmd)
    return vm.proc.wait()


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if not args.command and not sys.stdin.isatty():
        print("run.py: no COMMAND and stdin is not a terminal: nothing to do", file=sys.stderr)
        return 2
    try:
        share = choose_share(load_config(args.config), args.share)
    except ConfigError as exc:
        print(exc.report(), file=sys.stderr)
        return 2
    except DemoError as exc:
        print(f"run.py: {exc}", file=sys.stderr)
        return 2
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="vfsframe-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    # Ctrl-C and SIGTERM end the demo through the finally blocks below (SIGINT explicitly:
    # a shell starting us in the background would have it ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    server: Server | None = None
    vm: GuestVM | None = None
    try:
        server = Server(args.config, share.tag, workdir)
        server.wait_listening()
        kernel = fetch_kernel()
        script = guest_script(share.tag, args.command)
        devices = [Share(share.tag, server.socket, share.request_queues)]
        vm = GuestVM(script, devices, workdir, kernel=kernel)
        return run_command(vm, args.timeout) if args.command else run_shell(vm)
    except (DemoError, GuestSetupError) as exc:
        print(f"run.py: {exc}", file=sys.stderr)
        if server is not None:
            print(f"--- vfsframe serve log ---\n{server.log()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("run.py: interrupted", file=sys.stderr)
        return 130
    finally:
        if vm is not None:
            vm.kill()
        if server is not None:
            server.stop()
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
