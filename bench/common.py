"""What every benchmark needs: a share mounted by a real `vfsframe mount` process, timing,
and cold caches."""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from vfsframe.config.loader import load_config
from vfsframe.fuse import abi
from vfsframe.runtime import build_session
from vfsframe.session import FuseSession


def fuse_request(
    opcode: int,
    nodeid: int,
    body: bytes = b"",
    *,
    unique: int = 1,
    uid: int = 0,
    pid: int = 0,
    payload: int = 0,
) -> bytes:
    """A FUSE request as the kernel writes it: the in-header (gid = uid) and the arguments.
    ``payload`` bytes more are counted in its length but handed over apart (WRITE data)."""
    size = abi.IN_HEADER.size + len(body) + payload
    return abi.IN_HEADER.pack(size, opcode, unique, nodeid, uid, uid, pid, 0, 0) + body


def passthrough_session(workdir: Path, share_root: Path) -> FuseSession:
    """An in-process FUSE session over a passthrough share of ``share_root`` (its config
    written in ``workdir``), INIT already answered, for the benchmarks that hand the session
    requests themselves."""
    config = workdir / "share.toml"
    config.write_text(
        f'[[share]]\ntag = "bench"\nsocket = "{workdir}/s.sock"\ncache = "auto"\n'
        f'[share.backend]\ntype = "passthrough"\nroot = "{share_root}"\n'
    )
    session = build_session(load_config(config).shares[0])
    reply = bytearray(256)
    init = fuse_request(abi.Opcode.INIT, 0, abi.INIT_IN.pack(7, 38, 0, 0) + bytes(48), pid=1)
    session.handle([memoryview(init)], [memoryview(reply)])
    error = abi.OUT_HEADER.unpack_from(reply)[1]
    if error:
        raise RuntimeError(f"INIT failed with errno {-error}")
    return session


def drop_caches() -> None:
    """Make the next access ask the server, not the kernel's page and dentry caches."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3")


@contextlib.contextmanager
def fresh_filesystem(mountpoint: Path, size: int = 2 << 30) -> Iterator[bool]:
    """A new ext4 file system (mkfs defaults, so journaled) mounted on the empty directory
    ``mountpoint`` for the duration; True if it is there. Servers compared in one run each get
    one, so that they start from the same file system state: on a file system without a
    journal, ext4 skips inodes deleted in the last minutes when it allocates one, and reads
    each of them to find out, so a create costs what the earlier runs deleted (0.9 ms against
    0.1 ms on the development machine). The loop device reads and writes its image with
    direct I/O, as a disk would: a buffered one kept every block twice in the page cache, and
    a passthrough mount's 1 GiB write ran at a fifth of the speed it had with direct I/O.
    Without loop devices it says so and leaves the directory as it is (False)."""
    image = mountpoint.with_name(mountpoint.name + ".ext4")
    device = ""
    try:
        with open(image, "wb") as f:
            f.truncate(size)  # sparse: only what is written takes space
        # Inode tables and journal written now, not by a kernel thread during the run.
        mkfs = ["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0"]
        subprocess.run([*mkfs, str(image)], check=True, capture_output=True)
        losetup = ["losetup", "--find", "--show", "--direct-io=on", str(image)]
        device = subprocess.run(losetup, check=True, capture_output=True, text=True).stdout.strip()
        subprocess.run(["mount", device, str(mountpoint)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", b"") or str(exc)
        print(f"  (no fresh file system for {mountpoint}: {detail!r}; using the host's)")
        if device:
            subprocess.run(["losetup", "--detach", device], check=False)
        image.unlink(missing_ok=True)
        yield False
        return
    try:
        yield True
    finally:
        subprocess.run(["umount", str(mountpoint)], check=False)
        subprocess.run(["losetup", "--detach", device], check=False)
        image.unlink(missing_ok=True)


TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children (a sandboxed `vfsframe serve` serves
    from a child of its supervisor)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14, 15)
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return own + sum(cpu_seconds(int(child)) for child in children)


def timed(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


Figures = dict[str, float]  # workload -> figure
Samples = dict[str, dict[str, list[float]]]  # target -> workload -> one figure per round


def whole_number(workload: str, value: float) -> str:
    """A figure as a table prints it (``workload`` is for tables that print some otherwise)."""
    return f"{value:,.0f}"


def figures_line(figures: Figures, text: Callable[[str, float], str] = whole_number) -> str:
    """One run's figures on one line: "seq write 1,234, create 567"."""
    return ", ".join(f"{workload} {text(workload, value)}" for workload, value in figures.items())


def collect_samples(
    name: str,
    mount: Callable[[], contextlib.AbstractContextManager[Path]],
    repeat: int,
    workloads: Callable[[Path], dict[str, float]],
) -> dict[str, list[float]]:
    """Run ``workloads`` on a fresh mount ``repeat`` times; each figure's samples, printed as
    they come."""
    samples: dict[str, list[float]] = {}
    for _ in range(repeat):
        with mount() as root:
            results = workloads(root)
        for key, value in results.items():
            samples.setdefault(key, []).append(value)
        print(f"  {name}: {figures_line(results)}", flush=True)
    return samples


def per_round_ratio(value: float, reference: float) -> float:
    """``value / reference``, or NaN when the reference figure is 0: a figure under its clock's
    tick, as a smoke-sized run's server CPU can be. `median_ratio` leaves NaNs out."""
    return value / reference if reference else math.nan


def median_ratio(ratios: list[float]) -> float:
    """The median of the rounds' defined ratios; NaN (printed "nan") if no round had one."""
    defined = [ratio for ratio in ratios if not math.isnan(ratio)]
    return statistics.median(defined) if defined else math.nan


def compare_in_rounds(
    targets: dict[str, Callable[[int], tuple[Figures, str]]],
    repeat: int,
    text: Callable[[str, float], str],
    alternate: bool = False,
) -> tuple[Samples, Samples]:
    """Each round runs every target once, in order (``alternate``: every other round in the
    reverse order; a target gets the round's number and returns its figures and a remark for
    the log line); returns every target's figures and, for all but the first, their ratios to
    the first target's figures of the same round. On a shared machine whole rounds differ by
    up to 2x; the ratio within a round does not."""
    names = list(targets)
    samples: Samples = {name: {} for name in names}
    ratios: Samples = {name: {} for name in names[1:]}
    for round_ in range(repeat):
        this: dict[str, Figures] = {}
        order = names[::-1] if alternate and round_ % 2 else names
        for name in order:
            this[name], remark = targets[name](round_)
            for key, value in this[name].items():
                samples[name].setdefault(key, []).append(value)
            print(
                f"  round {round_ + 1} {name}: {figures_line(this[name], text)}{remark}", flush=True
            )
        for name in names[1:]:
            for key, value in this[name].items():
                reference = this[names[0]][key]
                ratios[name].setdefault(key, []).append(per_round_ratio(value, reference))
    return samples, ratios


def print_comparison(
    samples: Samples,
    ratios: Samples,
    units: dict[str, str],
    text: Callable[[str, float], str],
    reference: str,
) -> None:
    """The medians of every target's figures, then the medians of its per-round ratios to the
    first target (``reference`` names it in the column heads)."""
    names = list(samples)
    widths = [max(15, len(name) + 2) for name in names]
    head = f"\n{'workload':<13} {'unit':<6}" + "".join(
        f"{name:>{width}}" for name, width in zip(names, widths, strict=True)
    )
    print(head + "".join(f"{name.split()[-1] + '/' + reference:>18}" for name in ratios))
    for workload, unit in units.items():
        values = "".join(
            f"{text(workload, statistics.median(samples[name][workload])):>{width}}"
            for name, width in zip(names, widths, strict=True)
        )
        quoted = "".join(f"{median_ratio(ratios[n][workload]):>18.2f}" for n in ratios)
        print(f"{workload:<13} {unit:<6}{values}{quoted}")
    print(f"(ratios: median over rounds of the per-round ratio to {names[0]})")


def wait_mounted(path: Path, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.ismount(path):
        if process.poll() is not None:
            raise RuntimeError(f"server for {path} exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} not mounted after {timeout}s")
        time.sleep(0.05)


@contextlib.contextmanager
def vfsframe_mount(share_toml: str, cache: str = "auto") -> Iterator[Path]:
    """Mount a one-share config (``share_toml`` is the share's body after its tag and
    cache lines, e.g. its ``[share.backend]`` table) with a `vfsframe mount` process, as a
    user would run it; unmounted (SIGTERM) afterwards."""
    config = Path(tempfile.mkstemp(prefix="bench-", suffix=".toml")[1])
    config.write_text(f'[[share]]\ntag = "bench"\ncache = "{cache}"\n{share_toml}')
    mountpoint = Path(tempfile.mkdtemp(prefix="bench-vfsframe-"))
    command = [sys.executable, "-m", "vfsframe", "--log-level", "warning", "mount"]
    server = subprocess.Popen([*command, str(config), str(mountpoint)], stdout=subprocess.DEVNULL)
    try:
        wait_mounted(mountpoint, server)
        yield mountpoint
    finally:
        server.terminate()
        server.wait(timeout=60)
        with contextlib.suppress(OSError):
            mountpoint.rmdir()
        config.unlink()
