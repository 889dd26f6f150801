"""A sandboxed `vfsframe serve` over a passthrough share, and what /proc tells about it."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.guest.servers import VfsframePassthrough

# What passthrough with preserve_ownership keeps: CHOWN, DAC_OVERRIDE, FOWNER, FSETID,
# SETGID, SETUID (bits 0, 1, 3, 4, 6, 7).
PASSTHROUGH_CAPS = (1 << 0) | (1 << 1) | (1 << 3) | (1 << 4) | (1 << 6) | (1 << 7)


class SandboxedPassthrough(VfsframePassthrough):
    """`vfsframe serve --sandbox MODE --seccomp MODE [extra args]` over a fresh directory."""

    name = "vfsframe-sandboxed"

    def __init__(
        self,
        workdir: Path,
        sandbox: str,
        seccomp: str = "kill",
        extra: tuple[str, ...] = (),
        tag: str = "data",
        request_queues: int = 2,
        owner: int | None = None,
        middleware: str = "",
    ) -> None:
        args = ("--sandbox", sandbox, "--seccomp", seccomp, *extra)
        super().__init__(workdir, tag, request_queues, args, owner, middleware=middleware)
        self.sandbox, self.seccomp = sandbox, seccomp

    def serving_pid(self) -> int:
        """The process that serves: the supervisor's child in namespace mode."""
        assert self.proc is not None
        if self.sandbox != "namespace":
            return self.proc.pid
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        return int(children.split()[0])

    def wait_sandboxed(self, timeout: float = 60.0) -> int:
        """Wait until the serving process has loaded its filter; its pid."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.alive(), self.log()
            try:
                pid = self.serving_pid()
                if "sandbox " in self.log() and "entered" in self.log():
                    return pid
            except (IndexError, FileNotFoundError):
                pass
            assert time.monotonic() < deadline, self.log()
            time.sleep(0.1)


def status_fields(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def namespaces_of(pid: int | str) -> dict[str, str]:
    kinds = ("mnt", "pid", "ipc", "uts", "net", "user")
    return {kind: os.readlink(f"/proc/{pid}/ns/{kind}") for kind in kinds}
