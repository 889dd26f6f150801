"""The sandbox plan: what the sandboxed server will contain, computed from the validated
config before anything starts. `vfsframe check` prints it; `vfsframe serve` carries it out."""

from __future__ import annotations

import logging
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vfsframe.plugin import PluginRegistry

from .capabilities import CAPABILITY_NAMES, last_capability
from .idmap import IdMapping
from .needs import SandboxNeeds, UndeclaredNeeds, share_needs
from .syscalls import allowed_syscalls

SandboxMode = Literal["namespace", "chroot", "none"]
SeccompMode = Literal["kill", "log", "none"]
MountKind = Literal["rw", "ro", "tmpfs", "dev"]

log = logging.getLogger(__name__)

# Device nodes the interpreter may open (bound in read-write: /dev/null is written to).
DEVICE_NODES = (Path("/dev/null"), Path("/dev/zero"), Path("/dev/urandom"))
_KERNEL_FILE_SYSTEMS = (Path("/proc"), Path("/sys"), Path("/dev"))
# What name resolution and TLS read while serving, for plugins that use the network (the
# resolver rereads resolv.conf when it changes; system CA bundles live under /etc/ssl).
NETWORK_FILES = tuple(
    Path(p) for p in ("/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/gai.conf",
                      "/etc/ssl", "/etc/ca-certificates", "/usr/share/ca-certificates")
)  # fmt: skip


@dataclass(frozen=True)
class PlannedMount:
    path: Path
    kind: MountKind
    why: str


@dataclass(frozen=True)
class SandboxPlan:
    mode: SandboxMode
    namespaces: tuple[str, ...]
    mounts: tuple[PlannedMount, ...]
    capabilities: tuple[str, ...]
    seccomp: SeccompMode
    syscalls: tuple[str, ...]
    uid_map: tuple[IdMapping, ...] = ()
    gid_map: tuple[IdMapping, ...] = ()
    needs: SandboxNeeds = field(default_factory=SandboxNeeds)

    @property
    def isolates(self) -> bool:
        return self.mode != "none"

    def describe(self) -> list[str]:
        """Human-readable lines for `vfsframe check`."""
        lines = [f"sandbox: {self.mode}"]
        if self.namespaces:
            lines.append(f"  namespaces: {', '.join(self.namespaces)}")
        if self.mode == "namespace":
            lines.append("  root: a fresh tmpfs (pivot_root) holding only:")
        elif self.mode == "chroot":
            lines.append("  root: an empty, deleted directory (chroot); reachable only through")
            lines.append("  descriptors opened before entering:")
        for mount in self.mounts:
            lines.append(f"    {mount.kind:5} {mount.path}  ({mount.why})")
        if self.isolates:
            lines.append("  vhost-user sockets: created before entering; not reachable inside")
        kept = ", ".join(self.capabilities) or "none"
        lines.append(f"  capabilities kept: {kept}; no_new_privs: yes")
        if self.uid_map or self.gid_map:
            lines.append(f"  uid map: {' '.join(map(str, self.uid_map)) or '(none)'}")
            lines.append(f"  gid map: {' '.join(map(str, self.gid_map)) or '(none)'}")
        if self.seccomp == "none":
            lines.append("  seccomp: none")
        else:
            lines.append(f"  seccomp: {self.seccomp}, {len(self.syscalls)} system calls allowed")
        return lines


def interpreter_paths() -> list[Path]:
    """Directories the interpreter may still import from: the installation, the venv, and
    where every imported module came from (an editable install's source tree included)."""
    found = {Path(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    for entry in sys.path:
        if entry and Path(entry).is_dir():
            found.add(Path(entry))
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if file:
            found.add(Path(file).parent)
    return _outermost(p for p in {p.resolve() for p in found if p.is_absolute()} if _bindable(p))


def _bindable(path: Path) -> bool:
    """Whether an interpreter directory may be bound into the sandbox root. Not the kernel's
    file systems (the sandbox mounts its own /proc and device nodes), and not the temporary
    directory or anything above it: `/` (an import path of `/`, e.g. a server started from
    there, would bind the whole host), or `/tmp`, which the sandbox replaces with a tmpfs."""
    if any(path.is_relative_to(k) for k in _KERNEL_FILE_SYSTEMS):
        return False
    if Path(tempfile.gettempdir()).resolve().is_relative_to(path):
        log.warning("sandbox: not binding %s (imports from there fail inside)", path)
        return False
    return True


def _outermost(paths: Iterable[Path]) -> list[Path]:
    """Drop the paths that lie inside another one of them."""
    result: list[Path] = []
    for path in sorted(set(paths), key=lambda p: len(p.parts)):
        if not any(path.is_relative_to(kept) for kept in result):
            result.append(path)
    return sorted(result)


def plan_mounts(needs: SandboxNeeds) -> tuple[PlannedMount, ...]:
    mounts = [PlannedMount(Path(tempfile.gettempdir()), "tmpfs", "private temp directory")]
    mounts += [PlannedMount(p, "dev", "device node") for p in DEVICE_NODES]
    mounts += [PlannedMount(p, "ro", "interpreter and plugins") for p in interpreter_paths()]
    mounts += [PlannedMount(p.resolve(), "ro", "declared read-only") for p in needs.read_only]
    if needs.network:
        mounts += [PlannedMount(p, "ro", "name resolution, TLS") for p in NETWORK_FILES
                   if p.exists()]  # fmt: skip
    mounts += [PlannedMount(p.resolve(), "rw", "declared read-write") for p in needs.read_write]
    # Outer paths first, so an inner mount lands on top of the one containing it.
    return tuple(sorted(mounts, key=lambda m: (len(m.path.parts), str(m.path))))


def make_plan(
    server: Any,
    shares: Iterable[Any],
    *,
    mode: SandboxMode | None = None,
    seccomp: SeccompMode | None = None,
    uid_map: Iterable[IdMapping] | None = None,
    gid_map: Iterable[IdMapping] | None = None,
    registry: PluginRegistry | None = None,
) -> SandboxPlan:
    """The plan for serving ``shares`` of a validated ``server`` config; the keyword
    arguments (the command line's) override the config's fields. Raises ``ValueError`` for
    a plan that cannot work (a plugin without declared needs, maps without a namespace)."""
    shares = list(shares)
    mode = mode or server.sandbox
    seccomp = seccomp or server.seccomp
    uids = tuple(server.uid_map if uid_map is None else uid_map)
    gids = tuple(server.gid_map if gid_map is None else gid_map)
    if (uids or gids) and mode != "namespace":
        raise ValueError('uid_map/gid_map need sandbox = "namespace" (a user namespace)')
    if bool(uids) != bool(gids):
        # An unmapped id cannot own what the server creates (EOVERFLOW): give both.
        raise ValueError("give uid_map and gid_map together (a user namespace needs both)")
    if mode == "none":
        needs = _needs_without_declarations(shares, registry)
    else:
        needs = share_needs(shares, registry)
    namespaces: tuple[str, ...] = ()
    if mode == "namespace":
        namespaces = ("mount", "pid", "ipc", "uts")
        if not needs.network:
            namespaces += ("net",)
        if uids or gids:
            namespaces = ("user", *namespaces)
    mounts = plan_mounts(needs) if mode == "namespace" else ()
    if mode == "chroot":
        mounts = tuple(PlannedMount(p, "rw", "opened before chroot") for p in needs.read_write)
        mounts += tuple(PlannedMount(p, "ro", "opened before chroot") for p in needs.read_only)
    return SandboxPlan(
        mode=mode,
        namespaces=namespaces,
        mounts=mounts,
        capabilities=tuple(sorted(needs.capabilities)),
        seccomp=seccomp,
        syscalls=tuple(sorted(allowed_syscalls(needs))) if seccomp != "none" else (),
        uid_map=uids,
        gid_map=gids,
        needs=needs,
    )


def _needs_without_declarations(
    shares: Iterable[Any], registry: PluginRegistry | None
) -> SandboxNeeds:
    try:
        return share_needs(shares, registry)
    except UndeclaredNeeds:
        # An undeclared plugin under sandbox = "none" may do anything: keep the network
        # calls and every capability the process has.
        every = CAPABILITY_NAMES[: last_capability() + 1]
        return SandboxNeeds(network=True, capabilities=frozenset(every))
