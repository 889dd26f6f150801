"""Two guests at once on one host directory, for each kind of server: the harness shared by
tests/usecases/test_two_guests.py and bench/guest_two_guests.py.

Each device kind is a host directory served to guest A and guest B over a socket each:
`vfsframe serve` with one share listing both sockets (one process, one backend), two
`vfsframe serve` processes on the same directory, and two reference C virtiofsd processes.
Both guests attach every kind as its own virtio-fs device and run `two_guests.sh` on them
one after another (both on the same device at the same time); they coordinate through
marker files in the shared directory itself.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.guest.servers import SERVE, VIRTIOFSD, restart, wait_for_socket
from vfsframe.testing.guestvm import GuestResult, GuestVM, Share

HERE = Path(__file__).parent
SCRIPT = (HERE / "two_guests.sh").read_text()
TOOL_SOURCE = HERE / "guesttool.c"
SUBDIRS = ("hop", "c2o", "append", "lock", "list", "bar")
# Seconds both guests may take for every scenario on every device under TCG on a busy host.
RUN_TIMEOUT = 1500.0
# From two_guests.sh: what the checks below compare against.
ROUNDS, APPENDS, FILES = 6, 200, 25
LOCK_HOLD_MS = 3000


@dataclass(frozen=True)
class DeviceKind:
    """One way of serving the shared directory to both guests."""

    tag: str
    server: str  # "vfsframe" or "virtiofsd"
    cache: str  # "auto" or "none"
    processes: int  # 1: one process serves both guests (sockets = [...]); 2: one per guest
    locks: bool  # run the blocking POSIX lock scenario (the C virtiofsd has no SETLKW)

    @property
    def label(self) -> str:
        where = "1 process" if self.processes == 1 else "2 processes"
        return f"{self.server} cache={self.cache} ({where})"


KINDS = (
    DeviceKind("vfauto", "vfsframe", "auto", 1, True),
    DeviceKind("vfnone", "vfsframe", "none", 1, True),
    DeviceKind("vf2proc", "vfsframe", "auto", 2, True),
    DeviceKind("refauto", "virtiofsd", "auto", 2, False),
    DeviceKind("refnone", "virtiofsd", "none", 2, False),
)


def build_guesttool(out: Path) -> Path:
    """guesttool.c as a static binary (the guest has no C library)."""
    if shutil.which("gcc") is None:
        raise RuntimeError(
            "gcc not found: the two-guest tests build a static helper (gcc, libc6-dev)"
        )
    subprocess.run(["gcc", "-static", "-O2", "-Wall", "-o", str(out), str(TOOL_SOURCE)],
                   check=True, capture_output=True, text=True)  # fmt: skip
    return out


@dataclass
class ServerProcess:
    """A server process (vfsframe serve or the C virtiofsd) listening on some sockets."""

    name: str
    command: list[str]
    sockets: list[Path]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT)  # fmt: skip
        for sock in self.sockets:
            wait_for_socket(sock, self.proc)

    def stop(self) -> int | None:
        """SIGTERM (the C virtiofsd has usually left with its guest); the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def log(self) -> str:
        with contextlib.suppress(FileNotFoundError):
            return self.log_path.read_text(errors="replace")
        return ""


@dataclass
class TwoGuestRun:
    """What one run left: both guests' consoles, the shared directories, the server logs."""

    guests: dict[str, GuestResult]
    dirs: dict[str, Path]
    servers: list[ServerProcess]
    statuses: dict[str, int | None] = field(default_factory=dict)

    def result(self, guest: str, name: str) -> dict[str, float]:
        """A guesttool RESULT line ("k=v k=v") as numbers."""
        text = self.guests[guest].results.get(name, "")
        return {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", text)}

    def server_logs(self) -> str:
        return "\n".join(f"--- {s.name}\n{s.log()[-2000:]}" for s in self.servers)

    def figures(self, kind: DeviceKind) -> dict[str, float]:
        """Cross-guest visibility figures (ms) of a device kind: the marker hop (a new file
        made in one guest, found by the other), and A's close → B has read the whole file."""
        hop = self.result("A", f"{kind.tag}.hop").get("hop_ms", float("nan"))
        writer = self.result("A", f"{kind.tag}.c2o-writer")
        reader = self.result("B", f"{kind.tag}.c2o-reader")
        rtt = writer.get("rtt_ms", float("nan"))
        return {
            "hop_ms": hop,
            # The writer's round trip is: closed-marker hop, B reading, got-marker hop.
            "close_to_whole_ms": rtt - hop,
            "close_to_whole_max_ms": writer.get("max_ms", float("nan")) - hop,
            "stale_ms_max": reader.get("stale_ms_max", float("nan")),
            "whole_at_once": reader.get("whole_at_once", float("nan")),
        }


def _prepare_dir(root: Path, kind: DeviceKind) -> Path:
    root.mkdir(parents=True)
    root.chmod(0o755)
    for sub in SUBDIRS:
        (root / sub).mkdir()
    if kind.server == "virtiofsd":
        # Both guests' first `>> log` race to create it; QEMU 7.2's C virtiofsd sometimes dies
        # on that race ("invalid openat64 call: O_CREAT or O_TMPFILE without mode"), so the
        # reference gets the file made in advance. vfsframe keeps the race.
        (root / "append" / "log").touch()
    return root


def _vfsframe_config(path: Path, shares: Sequence[tuple[DeviceKind, Path, list[Path]]]) -> Path:
    """A passthrough share per kind: `socket` for one guest, `sockets` for both."""
    text = ""
    for kind, root, sockets in shares:
        paths = [str(s) for s in sockets]
        # A JSON string or list of strings is a valid TOML value.
        where = (
            f"socket = {json.dumps(paths[0])}"
            if len(paths) == 1
            else f"sockets = {json.dumps(paths)}"
        )
        text += (
            f'[[share]]\ntag = "{kind.tag}"\n{where}\ncache = "{kind.cache}"\n'
            f'[share.backend]\ntype = "passthrough"\nroot = {json.dumps(str(root))}\n\n'
        )
    path.write_text(text)
    return path


def _servers(
    workdir: Path, kinds: Sequence[DeviceKind], dirs: dict[str, Path]
) -> tuple[list[ServerProcess], dict[str, dict[str, Path]]]:
    """The server processes, and each guest's socket for each kind."""
    socks = workdir / "sock"
    socks.mkdir()
    sockets = {g: {k.tag: socks / f"{k.tag}-{g}.sock" for k in kinds} for g in ("A", "B")}
    both = {k.tag: [sockets["A"][k.tag], sockets["B"][k.tag]] for k in kinds}
    servers = []
    shared = [
        (k, dirs[k.tag], both[k.tag]) for k in kinds if k.server == "vfsframe" and k.processes == 1
    ]
    if shared:
        config = _vfsframe_config(workdir / "one-process.toml", shared)
        servers.append(ServerProcess("vfsframe-one-process", [*SERVE, "serve", str(config)],
                                     [s for _, _, ss in shared for s in ss],
                                     workdir / "vfsframe-one-process.log"))  # fmt: skip
    for kind in kinds:
        if kind.server == "vfsframe" and kind.processes == 2:
            for guest in ("A", "B"):
                sock = sockets[guest][kind.tag]
                config = _vfsframe_config(workdir / f"{kind.tag}-{guest}.toml",
                                          [(kind, dirs[kind.tag], [sock])])  # fmt: skip
                servers.append(ServerProcess(f"vfsframe-{kind.tag}-{guest}",
                                             [*SERVE, "serve", str(config)], [sock],
                                             workdir / f"{kind.tag}-{guest}.log"))  # fmt: skip
        elif kind.server == "virtiofsd":
            for guest in ("A", "B"):
                sock = sockets[guest][kind.tag]
                command = [str(VIRTIOFSD), f"--socket-path={sock}", "-o",
                           f"source={dirs[kind.tag]}", "-o", f"cache={kind.cache}",
                           "-o", "sandbox=chroot"]  # fmt: skip
                servers.append(ServerProcess(f"virtiofsd-{kind.tag}-{guest}", command, [sock],
                                             workdir / f"{kind.tag}-{guest}.log"))  # fmt: skip
    return servers, sockets


def guest_script(guest: str, kinds: Sequence[DeviceKind]) -> str:
    peer = "B" if guest == "A" else "A"
    devices = " ".join(f"{k.tag}:{int(k.locks)}" for k in kinds)
    leader = int(guest == "A")
    return f'ME={guest}\nPEER={peer}\nLEADER={leader}\nDEVICES="{devices}"\n{SCRIPT}'


@contextlib.contextmanager
def _running(servers: list[ServerProcess]) -> Iterator[dict[str, int | None]]:
    statuses: dict[str, int | None] = {}
    try:
        for server in servers:
            server.start()
        yield statuses
    finally:
        for server in servers:
            statuses[server.name] = server.stop()


def run_two_guests(
    workdir: Path, kernel: Path, kinds: Sequence[DeviceKind] = KINDS, memory_mb: int = 256
) -> TwoGuestRun:
    """Serve every kind, boot guests A and B together, wait until both are done."""
    dirs = {k.tag: _prepare_dir(workdir / "shared" / k.tag, k) for k in kinds}
    tools = dirs[kinds[0].tag] / ".tools"
    tools.mkdir()
    build_guesttool(tools / "guesttool")
    servers, sockets = _servers(workdir, kinds, dirs)
    guests: dict[str, GuestResult] = {}
    with _running(servers) as statuses:
        vms = {
            g: GuestVM(guest_script(g, kinds), [Share(k.tag, sockets[g][k.tag]) for k in kinds],
                       workdir / f"vm-{g}", memory_mb=memory_mb, cpus=1, kernel=kernel)
            for g in ("A", "B")
        }  # fmt: skip
        try:
            for g, vm in vms.items():
                vm.boot(before_retry=lambda g=g: _restart_references(servers, g))
            _wait_for_both(vms)
            for g, vm in vms.items():
                guests[g] = vm.wait(1.0)
        finally:
            for vm in vms.values():
                vm.kill()
    return TwoGuestRun(guests, dirs, servers, statuses)


def _restart_references(servers: list[ServerProcess], guest: str) -> None:
    """The guest's C virtiofsd processes again: each exits with its front-end."""
    for server in servers:
        if server.name.startswith("virtiofsd-") and server.name.endswith(f"-{guest}"):
            restart(server)


def _wait_for_both(vms: dict[str, GuestVM], grace: float = 60.0) -> None:
    """Until both guests power off, or RUN_TIMEOUT. A guest that stops without finishing its
    script (a panic, a crash) ends the run at once: its peer would only wait at every barrier."""
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        ended = {
            g: vm for g, vm in vms.items() if vm.proc is not None and vm.proc.poll() is not None
        }
        if len(ended) == len(vms):
            return
        if any("GUEST-DONE" not in vm.serial() for vm in ended.values()):
            return
        if ended:  # one finished: the other has at most its last barrier left
            deadline = min(deadline, time.monotonic() + grace)
        time.sleep(0.5)
