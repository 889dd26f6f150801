"""The sandbox plan computed from validated configs: what each backend declares, what the
root holds, which namespaces, capabilities and system calls; config errors with paths."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest

from tests.guest.servers import SERVE
from vfsframe.config.loader import ConfigError, validate_config
from vfsframe.config.models import ConfigModels
from vfsframe.plugin import PluginConfig, PluginRegistry, PluginType, default_registry
from vfsframe.sandbox import IdMapping, SandboxNeeds, UndeclaredNeeds, make_plan, share_needs
from vfsframe.sandbox.idmap import map_text
from vfsframe.sandbox.syscalls import NETWORK


def config(backend: dict, **server) -> object:
    return validate_config({"share": [{"tag": "t", "backend": backend}], **server})


def by_path(plan) -> dict[Path, str]:
    return {m.path: m.kind for m in plan.mounts}


def test_passthrough_root_is_the_only_read_write_path(tmp_path) -> None:
    server = config({"type": "passthrough", "root": str(tmp_path)})
    plan = make_plan(server, server.shares)
    mounts = by_path(plan)
    assert mounts[tmp_path] == "rw"
    assert [p for p, kind in mounts.items() if kind == "rw"] == [tmp_path]
    assert mounts[Path("/tmp")] == "tmpfs"
    assert mounts[Path(sys.base_prefix).resolve()] == "ro"
    assert plan.namespaces == ("mount", "pid", "ipc", "uts", "net")
    assert plan.capabilities == (
        "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_SETGID", "CAP_SETUID",
    )  # fmt: skip
    assert plan.seccomp == "kill"
    assert "openat2" in plan.syscalls and "connect" not in plan.syscalls
    assert "open_by_handle_at" not in plan.syscalls and "mount" not in plan.syscalls


def test_passthrough_options_change_the_needs(tmp_path) -> None:
    server = config(
        {"type": "passthrough", "root": str(tmp_path), "readonly": True,
         "preserve_ownership": False, "allow_devices": True}
    )  # fmt: skip
    plan = make_plan(server, server.shares)
    assert by_path(plan)[tmp_path] == "ro"
    assert "CAP_MKNOD" in plan.capabilities
    assert "CAP_SETUID" not in plan.capabilities


def test_overlay_holds_the_union_of_its_layers(tmp_path) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    lower.mkdir()
    upper.mkdir()
    server = config(
        {"type": "overlay", "lower": [{"type": "passthrough", "root": str(lower), "readonly": True}],
         "upper": {"type": "passthrough", "root": str(upper)}}
    )  # fmt: skip
    mounts = by_path(make_plan(server, server.shares))
    assert mounts[lower] == "ro" and mounts[upper] == "rw"


def test_objectstore_local_directory_and_s3_network(tmp_path) -> None:
    local = config({"type": "objectstore", "store": {"type": "local", "root": str(tmp_path)}})
    plan = make_plan(local, local.shares)
    assert by_path(plan)[tmp_path] == "rw"
    assert "net" in plan.namespaces
    s3 = config(
        {"type": "objectstore", "check_at_start": False,
         "store": {"type": "s3", "bucket": "bucket", "endpoint_url": "http://127.0.0.1:9"}}
    )  # fmt: skip
    plan = make_plan(s3, s3.shares)
    assert "net" not in plan.namespaces  # the host network stays reachable
    assert by_path(plan)[Path("/etc/resolv.conf")] == "ro"  # and names can be resolved
    assert set(plan.syscalls) >= NETWORK


class _Opaque(PluginConfig):
    type: Literal["opaque"] = "opaque"


def test_a_backend_without_declared_needs_is_refused_in_a_sandbox() -> None:
    installed = default_registry()
    registry = PluginRegistry([*installed.backends.values(), *installed.middleware.values()])
    registry.add(PluginType("opaque", "backend", _Opaque, lambda config, context: None))
    server = validate_config({"share": [{"tag": "t", "backend": {"type": "opaque"}}]},
                             models=ConfigModels(registry))  # fmt: skip
    with pytest.raises(UndeclaredNeeds, match="opaque declare no sandbox needs"):
        make_plan(server, server.shares, registry=registry)
    # With sandbox = "none" it may run, keeping every capability and the network.
    plan = make_plan(server, server.shares, mode="none", registry=registry)
    assert "CAP_SYS_ADMIN" in plan.capabilities and "connect" in plan.syscalls


def test_declared_needs_are_merged() -> None:
    a = SandboxNeeds(read_write=(Path("/a"),), capabilities=frozenset({"CAP_CHOWN"}))
    b = SandboxNeeds(read_write=(Path("/a"), Path("/b")), network=True, syscalls=frozenset({"x"}))
    merged = a | b
    assert merged.read_write == (Path("/a"), Path("/b"))
    assert merged.network and merged.capabilities == {"CAP_CHOWN"} and merged.syscalls == {"x"}


def test_memory_share_needs_nothing() -> None:
    server = config({"type": "memory"})
    assert share_needs(server.shares) == SandboxNeeds()


def test_id_maps_need_a_user_namespace(tmp_path) -> None:
    mapping = [":0:100000:65536:"]
    server = config({"type": "memory"}, uid_map=mapping, gid_map=mapping, sandbox="chroot")
    with pytest.raises(ValueError, match="need sandbox"):
        make_plan(server, server.shares)
    with pytest.raises(ValueError, match="together"):
        make_plan(server, server.shares, mode="namespace", gid_map=[])
    plan = make_plan(server, server.shares, mode="namespace")
    assert plan.namespaces[0] == "user"
    assert plan.uid_map == (IdMapping(0, 100000, 65536),)


def test_id_mapping_forms() -> None:
    assert IdMapping.parse(":0:100000:65536:") == IdMapping.parse("0:100000:65536")
    assert map_text([IdMapping(0, 100000, 10), IdMapping(10, 5, 1)]) == "0 100000 10\n10 5 1\n"
    for bad in ("0:1", "a:b:c", ":0:1:0:"):
        with pytest.raises(ValueError):
            IdMapping.parse(bad)


@pytest.mark.parametrize(
    ("server", "where"),
    [({"sandbox": "jail"}, "sandbox"), ({"seccomp": "maybe"}, "seccomp"),
     ({"uid_map": ["0:1"]}, "uid_map[0]")],
)  # fmt: skip
def test_bad_sandbox_fields_name_their_path(server, where) -> None:
    with pytest.raises(ConfigError) as info:
        config({"type": "memory"}, **server)
    assert any(p.startswith(f"{where}:") for p in info.value.problems), info.value.problems


def test_check_prints_the_plan(tmp_path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        f'[[share]]\ntag = "t"\n[share.backend]\ntype = "passthrough"\nroot = "{tmp_path}"\n'
    )
    out = subprocess.run([*SERVE, "check", str(path)], capture_output=True, text=True, check=True)
    assert "sandbox: namespace" in out.stdout
    assert "namespaces: mount, pid, ipc, uts, net" in out.stdout
    assert f"rw    {tmp_path}  (declared read-write)" in out.stdout
    assert "capabilities kept: CAP_CHOWN, CAP_DAC_OVERRIDE" in out.stdout
    assert "seccomp: kill, " in out.stdout and "system calls allowed" in out.stdout


def test_a_declared_read_write_directory_is_created_before_it_is_bound(tmp_path) -> None:
    # An object store's root that its backend would create on start: the sandbox opens its
    # bind sources before the backends are built, so it makes the directory itself.
    from vfsframe.sandbox.plan import PlannedMount
    from vfsframe.sandbox.rootfs import close_sources, open_sources

    missing = tmp_path / "store" / "objects"
    sources = open_sources((PlannedMount(missing, "rw", "declared read-write"),))
    try:
        assert missing.is_dir() and set(sources) == {missing}
    finally:
        close_sources(sources)


def test_interpreter_paths_never_bind_the_root_the_temp_dir_or_proc(monkeypatch) -> None:
    # E.g. a server started with `/` or /tmp on its import path: binding either read-only
    # would expose the whole host or hide the sandbox's private /tmp.
    from vfsframe.sandbox.plan import interpreter_paths

    monkeypatch.setattr(sys, "path", ["/", "/tmp", "/proc/self", *sys.path])
    paths = interpreter_paths()
    assert paths, "the interpreter's own directories are still bound"
    for path in paths:
        assert path != Path("/") and not Path("/tmp").is_relative_to(path)
        assert not path.is_relative_to("/proc")
