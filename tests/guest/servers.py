"""The virtio-fs servers a guest test can boot against, behind one interface.

A differential test runs the same guest workload against several of these and compares what
the guest saw. Adding a server kind (e.g. vfsframe's passthrough backend over the same kind of
directory the reference serves) is one more class here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from vfsframe.testing.guestvm import GuestResult, Share, run_guest

VIRTIOFSD = Path("/usr/lib/qemu/virtiofsd")
WORKLOAD = (Path(__file__).parent / "fs_workload.sh").read_text()
SERVE = [sys.executable, "-c", "import sys; from vfsframe.cli import main; sys.exit(main())"]


def workload(tag: str) -> str:
    """The guest filesystem workload script, mounting `tag`."""
    return f"TAG={tag}\n{WORKLOAD}"


# Seconds a guest may take for the whole workload under TCG.
WORKLOAD_TIMEOUT = 300.0


class Restartable(Protocol):
    sockets: Sequence[Path]

    def stop(self) -> object: ...
    def start(self) -> None: ...


def restart(server: Restartable) -> None:
    """A fresh server process on the same sockets (the reference exits with its front-end)."""
    server.stop()
    for sock in server.sockets:
        sock.unlink(missing_ok=True)
    server.start()


def boot_workload(server: Server, workdir: Path, kernel: Path) -> GuestResult:
    """Boot a guest that runs the filesystem workload on ``server``'s share; a boot that dies
    before /init runs is tried again against a restarted server (GuestVM.boot)."""
    share = Share(server.tag, server.socket, server.request_queues)
    result = run_guest(
        workload(server.tag), [share], workdir, timeout=WORKLOAD_TIMEOUT,
        before_retry=lambda: restart(server), kernel=kernel,
    )  # type: ignore[arg-type]  # fmt: skip
    assert result.finished, (
        f"guest did not finish:\n{result.serial[-3000:]}\n{server.log()[-3000:]}"
    )
    return result


def assert_same_results(ours: GuestResult, reference: GuestResult) -> None:
    """The differential check: the same guest script gave the same checks and values on
    vfsframe as on the reference C virtiofsd."""
    assert not reference.failed(), f"the reference itself failed: {reference.failed()}"
    assert ours.checks == reference.checks
    differences = {
        name: (ours.results.get(name), reference.results.get(name))
        for name in sorted(set(ours.results) | set(reference.results))
        if ours.results.get(name) != reference.results.get(name)
    }
    assert not differences, differences


def wait_for_socket(path: Path, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear")
        time.sleep(0.05)


class Server:
    """A running server process serving one tag on one vhost-user socket."""

    name = "server"
    request_queues = 1

    def __init__(self, workdir: Path, tag: str = "data") -> None:
        self.workdir = workdir
        self.tag = tag
        self.socket = workdir / f"{self.name}.sock"
        self.log_path = workdir / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def sockets(self) -> list[Path]:
        return [self.socket]

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
        wait_for_socket(self.socket, self.proc)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL if it does not go; the exit status of a clean stop."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return None
        return self.proc.returncode

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


class VfsframeMemory(Server):
    """`vfsframe serve` with the built-in memory backend."""

    name = "vfsframe-memory"

    def __init__(
        self, workdir: Path, tag: str = "data", request_queues: int = 2, cli_socket: bool = False
    ) -> None:
        super().__init__(workdir, tag)
        self.request_queues = request_queues
        self.cli_socket = cli_socket  # pass the socket as --socket-path instead of in config
        self.config = workdir / f"{self.name}.toml"
        configured = "" if cli_socket else f'socket = "{self.socket}"\n'
        self.config.write_text(
            f'[[share]]\ntag = "{tag}"\n{configured}request_queues = {request_queues}\n'
            'cache = "auto"\n[share.backend]\ntype = "memory"\ncapacity = "1GiB"\n'
        )

    def command(self) -> list[str]:
        cmd = [*SERVE, "serve", str(self.config)]
        if self.cli_socket:
            cmd += ["--share", self.tag, "--socket-path", str(self.socket)]
        return cmd


class VfsframePassthrough(Server):
    """`vfsframe serve [ARGS]` with the passthrough backend over a fresh directory, the kind
    of share the reference serves."""

    name = "vfsframe-passthrough"

    def __init__(
        self,
        workdir: Path,
        tag: str = "data",
        request_queues: int = 2,
        args: Sequence[str] = (),
        owner: int | None = None,
        log_level: str = "info",
        middleware: str = "",
    ) -> None:
        """`middleware`: the share's middleware list as TOML, e.g. '{ type = "log" }'."""
        super().__init__(workdir, tag)
        self.request_queues = request_queues
        self.args = tuple(args)
        self.log_level = log_level
        self.source = Path(tempfile.mkdtemp(prefix="pt-share-", dir=workdir))
        self.source.chmod(0o755)  # mkdtemp makes it 0700; a fresh share's root is 0755
        if owner is not None:  # a rootless server's share belongs to its mapped uid
            os.chown(self.source, owner, owner)
        self.config = workdir / f"{self.name}.toml"
        self.config.write_text(
            f'[[share]]\ntag = "{tag}"\nsocket = "{self.socket}"\n'
            f'request_queues = {request_queues}\ncache = "auto"\nmiddleware = [{middleware}]\n'
            f'[share.backend]\ntype = "passthrough"\nroot = "{self.source}"\n'
        )

    def command(self) -> list[str]:
        return [*SERVE, "--log-level", self.log_level, "serve", str(self.config), *self.args]


class ReferenceVirtiofsd(Server):
    """The C virtiofsd from Debian's QEMU 7.2 over a fresh empty directory. It serves one
    request queue and exits when its front-end disconnects: one process per boot."""

    name = "virtiofsd"

    def __init__(self, workdir: Path, tag: str = "data") -> None:
        super().__init__(workdir, tag)
        self.source = Path(tempfile.mkdtemp(prefix="ref-share-", dir=workdir))
        self.source.chmod(0o755)  # mkdtemp makes it 0700; a fresh share's root is 0755

    def command(self) -> list[str]:
        return [
            str(VIRTIOFSD), f"--socket-path={self.socket}", "-o", f"source={self.source}",
            "-o", "cache=auto", "-o", "sandbox=chroot",
        ]  # fmt: skip
