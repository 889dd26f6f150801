"""Boot a throwaway Linux guest under QEMU that mounts virtio-fs shares and runs a script.

Used by the guest tests, the examples and the benchmarks. The pieces:

- a guest kernel: Debian bookworm-backports' `linux-image-amd64` (6.12: virtio, virtiofs and
  multi-queue built in, so no modules are needed), fetched with `apt-get download` through a
  private apt configuration (the system's sources are never touched) and cached outside the
  repo, in ~/.cache/vfsframe/guest/ (or $VFSFRAME_GUEST_CACHE);
- an initramfs made here from Debian's busybox-static: /init mounts the basics, runs the given
  shell script, and powers off. The script reports over the serial console with lines
  `CHECK name ok|fail detail` and `RESULT name value` (helpers `check` and `result`);
- QEMU under TCG (KVM hangs on these machines) with guest RAM in a shared memfd, as vhost-user
  requires, and one vhost-user-fs-pci device per share.

`python -m vfsframe.testing.guestvm fetch-kernel` pre-fetches the kernel (CI's installer does).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

QEMU = "qemu-system-x86_64"
BUSYBOX = Path("/bin/busybox")
KERNEL_PACKAGE = "linux-image-amd64"
KERNEL_SUITE = "bookworm-backports"
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
BOOT_TIMEOUT = 240.0
# Boots tried when the guest kernel panics before /init runs (see GuestVM.boot).
BOOT_ATTEMPTS = 3
# no_timer_check: on a busy host a TCG guest can miss the IO-APIC timer check and panic.
DEFAULT_KERNEL_ARGS = (
    "console=ttyS0 rdinit=/init quiet loglevel=1 panic=-1 oops=panic no_timer_check"
)


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "vfsframe" / "guest"
    return Path(os.environ.get("VFSFRAME_GUEST_CACHE", default))


class GuestSetupError(RuntimeError):
    """Something the guest needs is missing; the message says how to get it."""


# -- the kernel ------------------------------------------------------------------------------


def debian_mirror() -> str:
    """The Debian archive the system already uses (so we reach what it reaches), or
    $VFSFRAME_DEBIAN_MIRROR."""
    if mirror := os.environ.get("VFSFRAME_DEBIAN_MIRROR"):
        return mirror
    candidates: list[Path] = [Path("/etc/apt/sources.list")]
    candidates += sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    candidates += sorted(Path("/etc/apt/sources.list.d").glob("*.list"))
    for path in candidates:
        try:
            text = path.read_text()
        except OSError:
            continue
        # deb822: a stanza with URIs and Suites; one-line: "deb [opts] URI SUITE ...".
        for stanza in re.split(r"\n\s*\n", text):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
            if uris and suites and "bookworm" in suites.group(1).split():
                return uris.group(1)
        for line in text.splitlines():
            m = re.match(r"\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s", line)
            if m:
                return m.group(1)
    raise GuestSetupError(
        "no Debian bookworm archive in the apt sources; set VFSFRAME_DEBIAN_MIRROR to one"
    )


def _apt_options(root: Path) -> list[str]:
    """apt options for a private configuration under root: its own sources, lists and
    cache, so fetching the backports kernel leaves the system's apt state untouched."""
    (root / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (root / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    (root / "sources.list.d").mkdir(exist_ok=True)
    signed = f"[signed-by={KEYRING}] " if KEYRING.exists() else ""
    (root / "sources.list").write_text(f"deb {signed}{debian_mirror()} {KERNEL_SUITE} main\n")
    return [
        "-o", f"Dir::Etc::SourceList={root / 'sources.list'}",
        "-o", f"Dir::Etc::SourceParts={root / 'sources.list.d'}",
        "-o", f"Dir::State::Lists={root / 'lists'}",
        "-o", f"Dir::Cache={root / 'cache'}",
        "-o", "APT::Get::List-Cleanup=0",
    ]  # fmt: skip


def _run(cmd: Sequence[str], cwd: Path | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode:
        raise GuestSetupError(f"{' '.join(cmd[:3])} ... failed:\n{proc.stderr.strip()[-2000:]}")
    return proc.stdout


def fetch_kernel(cache: Path | None = None) -> Path:
    """The guest kernel image, fetched into the cache on first use."""
    cache = cache or cache_dir()
    kernel = cache / "vmlinuz"
    if kernel.exists():
        return kernel
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one fetch at a time (parallel test workers)
        if kernel.exists():
            return kernel
        for tool in ("apt-get", "apt-cache", "dpkg-deb"):
            if shutil.which(tool) is None:
                raise GuestSetupError(f"{tool} not found: the guest kernel comes from Debian")
        apt_root = cache / "apt"
        opts = _apt_options(apt_root)
        _run(["apt-get", *opts, "-q", "update"])
        # The meta package depends on the versioned image; that is the one with the kernel.
        depends = _run(["apt-cache", *opts, "depends", f"{KERNEL_PACKAGE}/{KERNEL_SUITE}"])
        match = re.search(r"Depends:\s*(linux-image-\S+-amd64)\b", depends)
        if not match:
            raise GuestSetupError(f"cannot tell which kernel {KERNEL_PACKAGE} depends on")
        package = match.group(1)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            _run(["apt-get", *opts, "-q", "download", f"{package}/{KERNEL_SUITE}"], cwd=Path(tmp))
            (deb,) = Path(tmp).glob("*.deb")
            unpacked = Path(tmp) / "root"
            unpacked.mkdir()
            # Only boot/ is needed; the modules (hundreds of MB) stay in the package.
            fsys = subprocess.Popen(
                ["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE
            )
            tar = subprocess.run(
                ["tar", "-x", "-C", str(unpacked), "--wildcards", "./boot/vmlinuz-*"],
                stdin=fsys.stdout, capture_output=True, text=True,
            )  # fmt: skip
            assert fsys.stdout is not None
            fsys.stdout.close()
            if fsys.wait() or tar.returncode:
                raise GuestSetupError(f"cannot unpack {deb.name}: {tar.stderr.strip()}")
            (image,) = (unpacked / "boot").glob("vmlinuz-*")
            shutil.copyfile(image, cache / "vmlinuz.tmp")
            (cache / "vmlinuz.tmp").rename(kernel)
            (cache / "kernel-version").write_text(image.name.removeprefix("vmlinuz-") + "\n")
    return kernel


# -- the initramfs ---------------------------------------------------------------------------

INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mount -t tmpfs tmp /tmp
echo "GUEST-START $(uname -r) cpus=$(nproc)"
sh /check.sh
echo "GUEST-DONE rc=$?"
sync
sleep 0.3  # let the UART drain before the power goes
poweroff -f
"""

# Prepended to every guest script: the reporting helpers the harness parses.
PRELUDE = r"""
check() {  # check NAME 'shell code': CHECK NAME ok|fail <first output line>
    _name=$1; shift
    if _out=$(eval "$1" 2>&1); then echo "CHECK $_name ok"
    else echo "CHECK $_name fail $(echo "$_out" | head -n 3 | tr '\n' '|' | cut -c1-300)"; fi
}
result() { echo "RESULT $1 $(printf '%s' "$2" | tr '\n' '|')"; }
"""


def _cpio_entry(name: str, mode: int, data: bytes = b"", ino: int = 0, rdev: int = 0) -> bytes:
    # newc format: "070701", 13 eight-digit hex fields, the name, data; all 4-byte padded.
    fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev >> 8, rdev & 0xFF,
              len(name) + 1, 0]  # fmt: skip
    head = b"070701" + b"".join(b"%08X" % f for f in fields) + name.encode() + b"\0"
    head += b"\0" * (-len(head) % 4)
    return head + data + b"\0" * (-len(data) % 4)


def build_initramfs(script: str, out: Path, busybox: Path = BUSYBOX) -> Path:
    """An uncompressed newc initramfs running `script` (PRELUDE prepended) as /check.sh."""
    if not busybox.exists():
        raise GuestSetupError(f"{busybox} not found: install Debian's busybox-static")
    entries: list[bytes] = []
    dirs = ["bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "mnt",
            "mnt/a", "mnt/b", "mnt/c", "root", "etc"]  # fmt: skip
    for i, d in enumerate(dirs, 1):
        entries.append(_cpio_entry(d, 0o040755, ino=i))
    ino = len(dirs) + 1
    # The kernel opens /dev/console for init's stdio before devtmpfs is mounted.
    entries.append(_cpio_entry("dev/console", 0o020600, ino=ino, rdev=(5 << 8) | 1))
    files = [
        ("bin/busybox", 0o100755, busybox.read_bytes()),
        ("init", 0o100755, INIT.encode()),
        ("check.sh", 0o100755, (PRELUDE + script).encode()),
    ]
    for name, mode, data in files:
        ino += 1
        entries.append(_cpio_entry(name, mode, data, ino=ino))
    entries.append(_cpio_entry("TRAILER!!!", 0))
    out.write_bytes(b"".join(entries))
    return out


# -- the VM ----------------------------------------------------------------------------------


@dataclass
class Share:
    """A vhost-user-fs device to attach: the guest mounts it with `mount -t virtiofs TAG`."""

    tag: str
    socket: Path
    request_queues: int = 1


@dataclass
class GuestResult:
    returncode: int | None
    serial: str
    checks: dict[str, str] = field(default_factory=dict)  # name -> "ok" | "fail ..."
    results: dict[str, str] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return "GUEST-DONE" in self.serial

    def failed(self) -> dict[str, str]:
        return {k: v for k, v in self.checks.items() if v != "ok"}


def parse_serial(text: str) -> tuple[dict[str, str], dict[str, str]]:
    checks: dict[str, str] = {}
    results: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip("\r")
        if m := re.match(r"CHECK (\S+) (ok|fail)(?: (.*))?$", line):
            checks[m.group(1)] = m.group(2) if m.group(2) == "ok" else f"fail {m.group(3) or ''}"
        elif m := re.match(r"RESULT (\S+) ?(.*)$", line):
            results[m.group(1)] = m.group(2)
    return checks, results


class GuestVM:
    """One QEMU process booting the kernel with an initramfs that runs a script."""

    def __init__(
        self,
        script: str | None,
        shares: Sequence[Share],
        workdir: Path,
        memory_mb: int = 512,
        cpus: int = 2,
        kernel: Path | None = None,
        kernel_args: str = DEFAULT_KERNEL_ARGS,
        init_line: str = "GUEST-START",
    ) -> None:
        self.shares = list(shares)
        self.workdir = workdir
        self.memory_mb = memory_mb
        self.cpus = cpus
        self.kernel = kernel or fetch_kernel()
        self.kernel_args = kernel_args
        self.init_line = init_line  # the first line the guest's init prints
        workdir.mkdir(parents=True, exist_ok=True)
        # No script: no initramfs, the kernel mounts its root itself (e.g. root=TAG
        # rootfstype=virtiofs in kernel_args, see vfsframe.testing.rootfs).
        self.initramfs = (
            build_initramfs(script, workdir / "initramfs.cpio") if script is not None else None
        )
        self.serial_path = workdir / "serial.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.early_panics: list[str] = []  # the consoles of boots that died before init
        self.started_at = 0.0  # time.monotonic() when QEMU last started

    def command(self) -> list[str]:
        if shutil.which(QEMU) is None:
            raise GuestSetupError(f"{QEMU} not found: install Debian's qemu-system-x86")
        mem = f"{self.memory_mb}M"
        cmd = [
            QEMU, "-accel", "tcg", "-machine", "pc", "-nodefaults", "-no-reboot",
            "-m", mem, "-smp", str(self.cpus),
            "-object", f"memory-backend-memfd,id=mem,size={mem},share=on",
            "-numa", "node,memdev=mem",
            "-kernel", str(self.kernel), "-append", self.kernel_args,
            "-display", "none", "-monitor", "none",
            "-serial", f"file:{self.serial_path}",
        ]  # fmt: skip
        if self.initramfs is not None:
            cmd += ["-initrd", str(self.initramfs)]
        for i, share in enumerate(self.shares):
            device = f"vhost-user-fs-pci,chardev=vfs{i},tag={share.tag},queue-size=1024"
            if share.request_queues > 1:
                device += f",num-request-queues={share.request_queues}"
            cmd += ["-chardev", f"socket,id=vfs{i},path={share.socket}", "-device", device]
        return cmd

    def start(self) -> None:
        self.serial_path.write_bytes(b"")
        self.started_at = time.monotonic()
        log = open(self.workdir / "qemu.log", "wb")  # noqa: SIM115 - lives as long as QEMU
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT)  # fmt: skip
        log.close()

    def boot(
        self, attempts: int = BOOT_ATTEMPTS, before_retry: Callable[[], None] | None = None
    ) -> None:
        """Start QEMU and wait until the guest's init prints its first line. Under TCG a guest
        kernel now and then dies in early boot (an int3 oops while patching its own text,
        seen in the initcalls), which says nothing of the file servers: such a boot is tried
        again, up to `attempts` boots in all, calling `before_retry` first (a server that
        exits with its front-end, like the C virtiofsd, must be restarted). Any other panic
        is the test's to judge, as is a last boot that panicked too."""
        for attempt in range(1, attempts + 1):
            self.start()
            if not self._panicked_before_init():
                return
            serial = self.serial()
            self.early_panics.append(serial)
            if attempt == attempts:
                return
            print(f"guest kernel panicked in early boot (boot {attempt} of {attempts}); "
                  f"booting again:\n{serial[-800:]}", file=sys.stderr)  # fmt: skip
            self.kill()
            if before_retry is not None:
                before_retry()

    def _panicked_before_init(self) -> bool:
        """Whether the kernel panicked in early boot; waits for that or init's first line.
        With an initramfs no share is touched before init runs. A kernel that mounts its
        root from a share does so after its initcalls, so there only a panic raised inside
        them counts."""
        deadline = time.monotonic() + BOOT_TIMEOUT
        while time.monotonic() < deadline:
            exited = self.proc is not None and self.proc.poll() is not None
            serial = self.serial()  # read after the poll: an exited QEMU wrote all of it
            if self.init_line in serial:
                return False
            if "Kernel panic" in serial:
                return self.initramfs is not None or "do_one_initcall" in serial
            if exited:
                return False
            time.sleep(0.1)
        return False

    def serial(self) -> str:
        try:
            return self.serial_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for(self, pattern: str, timeout: float) -> bool:
        """Wait until the serial console shows a line matching pattern (regex)."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern, re.M)
        while time.monotonic() < deadline:
            if regex.search(self.serial()):
                return True
            if self.proc is not None and self.proc.poll() is not None:
                return bool(regex.search(self.serial()))
            time.sleep(0.1)
        return False

    def wait(self, timeout: float = BOOT_TIMEOUT) -> GuestResult:
        assert self.proc is not None
        try:
            rc: int | None = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            rc = None
        text = self.serial()
        checks, results = parse_serial(text)
        return GuestResult(rc, text, checks, results)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)

    def qemu_log(self) -> str:
        with contextlib.suppress(FileNotFoundError):
            return (self.workdir / "qemu.log").read_text(errors="replace")
        return ""


def run_guest(
    script: str,
    shares: Sequence[Share],
    workdir: Path,
    timeout: float = BOOT_TIMEOUT,
    before_retry: Callable[[], None] | None = None,
    **kwargs: int,
) -> GuestResult:
    """Boot (see GuestVM.boot), run script, power off; the parsed serial console."""
    vm = GuestVM(script, shares, workdir, **kwargs)  # type: ignore[arg-type]
    try:
        vm.boot(before_retry=before_retry)
        return vm.wait(timeout)
    finally:
        vm.kill()


@contextlib.contextmanager
def booted(script: str, shares: Sequence[Share], workdir: Path, **kwargs: int) -> Iterator[GuestVM]:
    """A booted VM (see GuestVM.boot) that is killed on exit, whatever happened."""
    vm = GuestVM(script, shares, workdir, **kwargs)  # type: ignore[arg-type]
    try:
        vm.boot()
        yield vm
    finally:
        vm.kill()


def main(argv: list[str]) -> int:
    if argv[:1] == ["fetch-kernel"]:
        try:
            kernel = fetch_kernel()
        except GuestSetupError as exc:
            print(f"guestvm: {exc}", file=sys.stderr)
            return 1
        version = (kernel.parent / "kernel-version").read_text().strip()
        print(f"guest kernel {version}: {kernel}")
        return 0
    print("usage: python -m vfsframe.testing.guestvm fetch-kernel", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
