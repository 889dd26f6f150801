"""log, metrics, cache and idmap through the host kernel, and all five in one share."""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from pathlib import Path

import pytest
from vfsframe_plugins.cache import CacheMiddleware
from vfsframe_plugins.metrics import MetricsMiddleware

from vfsframe import ops
from vfsframe.chain import ShareChain

from .mounting import BACKENDS, HAVE_OBJECTSTORE, Served, attempt_as, run, serve

pytestmark = pytest.mark.mount

SECRET = "contents that must never reach a log line"


def make_tree(root: Path) -> None:
    (root / "dir" / "sub").mkdir(parents=True)
    (root / "dir" / "file.txt").write_text(SECRET * 100)
    (root / "dir" / "sub" / "bin").write_bytes(os.urandom(300_000))
    (root / "empty").touch()
    os.symlink("dir/file.txt", root / "link")
    os.link(root / "dir" / "file.txt", root / "hard")


def host_stat(served: Served, path: str) -> os.stat_result | ops.Attr:
    """Attributes as the backend holds them (host ids), bypassing every middleware."""
    if served.host_root is not None:
        return os.lstat(served.host_root / path.lstrip("/"))
    chain = ShareChain(served.chain.backend, [])
    return chain.getattr(ops.GetattrRequest(ops.Context(), path))


@pytest.mark.parametrize("backend", BACKENDS)
def test_log(mountpoint: Path, backend: str, tmp_path: Path) -> None:
    log_path = tmp_path / "ops.jsonl"
    log = {"type": "log", "format": "json", "path": str(log_path)}
    with serve(mountpoint, backend, [log]):
        (mountpoint / "f").write_text(SECRET)
        assert (mountpoint / "f").read_text() == SECRET
        os.rename(mountpoint / "f", mountpoint / "g")
        with pytest.raises(FileNotFoundError):
            os.stat(mountpoint / "missing")
    entries = [json.loads(line) for line in log_path.read_text().splitlines()]
    by_op = {entry["op"]: entry for entry in entries}
    assert {"getattr", "create", "write", "read", "rename", "release"} <= set(by_op)
    assert by_op["write"]["bytes"] == len(SECRET) and by_op["write"]["path"] == "/f"
    assert by_op["rename"]["old"] == "/f" and by_op["rename"]["new"] == "/g"
    assert by_op["write"]["pid"] == os.getpid() and by_op["write"]["uid"] == 0
    missing = [e for e in entries if e.get("path") == "/missing"]
    assert missing and missing[0]["errno"] == "ENOENT"
    assert SECRET not in log_path.read_text()


@pytest.mark.parametrize("backend", BACKENDS)
def test_metrics(mountpoint: Path, backend: str) -> None:
    with serve(mountpoint, backend, [{"type": "metrics", "listen": "127.0.0.1:0"}]) as served:
        (mountpoint / "f").write_bytes(b"x" * 10_000)
        assert len((mountpoint / "f").read_bytes()) == 10_000
        metrics = served.middleware(MetricsMiddleware)
        host, port = metrics.address
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
    assert 'vfsframe_operations_total{op="write"}' in text
    assert "vfsframe_written_bytes_total 10000.0" in text
    assert 'vfsframe_operation_seconds_bucket{le="+Inf",op="create"} 1.0' in text


@pytest.mark.parametrize("backend", BACKENDS)
def test_cache(mountpoint: Path, backend: str, tmp_path: Path) -> None:
    cache = {"type": "cache", "block_size": "64KiB", "memory": "4MiB", "attr_ttl": 30}
    # cache="none": the kernel keeps nothing, so every read reaches the middleware.
    with serve(mountpoint, backend, [cache], cache="none") as served:
        source = tmp_path / "source"
        source.mkdir()
        make_tree(source)
        run("cp", "-a", f"{source}/.", str(mountpoint))
        run("diff", "-r", "--no-dereference", str(source), str(mountpoint))
        run("diff", "-r", "--no-dereference", str(source), str(mountpoint))
        middleware = served.middleware(CacheMiddleware)
        assert middleware.hits["read"] > 0 and middleware.hits["getattr"] > 0
        # A write is visible to the next read, through another name and an open handle.
        with open(mountpoint / "hard", "rb", buffering=0) as reader:
            assert reader.read(5) == SECRET[:5].encode()
            with open(mountpoint / "dir" / "file.txt", "r+b") as writer:
                writer.write(b"CHANGED")
            reader.seek(0)
            assert reader.read(7) == b"CHANGED"
        assert (mountpoint / "hard").read_bytes()[:7] == b"CHANGED"
        # Rename a directory the cache knows all about: nothing of the old names remains.
        os.rename(mountpoint / "dir", mountpoint / "moved")
        assert not (mountpoint / "dir").exists()
        assert sorted(os.listdir(mountpoint / "moved")) == ["file.txt", "sub"]
        assert (mountpoint / "moved" / "sub" / "bin").read_bytes() == (
            source / "dir" / "sub" / "bin"
        ).read_bytes()
        os.truncate(mountpoint / "moved" / "file.txt", 3)
        assert (mountpoint / "hard").read_bytes() == b"CHA"
        (mountpoint / "new").write_text("one")
        os.replace(mountpoint / "new", mountpoint / "empty")
        assert (mountpoint / "empty").read_text() == "one"
        assert "new" not in os.listdir(mountpoint)


@pytest.mark.skipif(not HAVE_OBJECTSTORE, reason="the objectstore backend is not installed")
def test_cache_over_the_objectstore_backend(mountpoint: Path) -> None:
    """The slow backend the cache is for: close-to-open writes, renames and listings."""
    cache = {"type": "cache", "block_size": "64KiB", "attr_ttl": 30, "dir_ttl": 30}
    with serve(mountpoint, "objectstore", [cache], cache="none") as served:
        (mountpoint / "d").mkdir()
        data = os.urandom(200_000)
        (mountpoint / "d" / "f").write_bytes(data)
        listing = run("ls", "-lR", str(mountpoint))
        assert (mountpoint / "d" / "f").read_bytes() == data
        assert (mountpoint / "d" / "f").read_bytes() == data
        assert run("ls", "-lR", str(mountpoint)) == listing
        middleware = served.middleware(CacheMiddleware)
        assert middleware.hits["read"] > 0 and middleware.hits["readdir"] > 0
        with open(mountpoint / "d" / "f", "rb", buffering=0) as reader:
            assert reader.read(4) == data[:4]
            with open(mountpoint / "d" / "f", "r+b") as writer:
                writer.write(b"NEW!")
            # Whatever version the old handle reads (the backend's rule), it must not become
            # what later opens see through the cache.
            reader.seek(0)
            reader.read(4)
            with open(mountpoint / "d" / "f", "rb") as again:
                assert again.read(4) == b"NEW!"  # close-to-open
        os.rename(mountpoint / "d" / "f", mountpoint / "d" / "g")
        assert os.listdir(mountpoint / "d") == ["g"]
        assert (mountpoint / "d" / "g").read_bytes()[:4] == b"NEW!"
        (mountpoint / "d" / "f").write_bytes(b"another file")
        assert (mountpoint / "d" / "f").read_bytes() == b"another file"
        assert os.stat(mountpoint / "d" / "g").st_size == len(data)
        os.unlink(mountpoint / "d" / "g")
        assert os.listdir(mountpoint / "d") == ["f"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_idmap(mountpoint: Path, backend: str) -> None:
    # Guest root stays host root (it may chown); every other guest id moves up by 100000.
    ranges = [{"guest": 0, "host": 0}, {"guest": 1, "host": 100001, "count": 65535}]
    idmap = {"type": "idmap", "uid_map": ranges, "gid_map": ranges}
    with serve(mountpoint, backend, [idmap], cache="none") as served:
        direct = ShareChain(served.chain.backend, [])
        direct.setattr(ops.SetattrRequest(ops.Context(), "/", mode=0o777))
        (mountpoint / "by-root").write_text("r")
        assert os.stat(mountpoint / "by-root").st_uid == 0
        assert host_stat(served, "/by-root").st_uid == 0
        os.chown(mountpoint / "by-root", 1000, 1000)
        shown = os.stat(mountpoint / "by-root")
        assert (shown.st_uid, shown.st_gid) == (1000, 1000)
        attr = host_stat(served, "/by-root")
        assert (attr.st_uid, attr.st_gid) == (101000, 101000)
        results = attempt_as(
            1000,
            {
                "mkdir": f"os.mkdir('{mountpoint}/by-user')",
                "own": f"open('{mountpoint}/by-root', 'a').write('more')",
            },
            Path("/"),
        )
        assert results == {"mkdir": "ok", "own": "ok"}
        assert os.stat(mountpoint / "by-user").st_uid == 1000
        assert host_stat(served, "/by-user").st_uid == 101000
        assert " 1000 1000 " in run("ls", "-ln", str(mountpoint))
        # A host owner no range covers shows as the overflow id.
        direct.setattr(ops.SetattrRequest(ops.Context(), "/by-user", uid=50, gid=50))
        shown = os.stat(mountpoint / "by-user")
        assert (shown.st_uid, shown.st_gid) == (65534, 65534)


@pytest.mark.parametrize("backend", BACKENDS)
def test_all_five_in_one_share(mountpoint: Path, backend: str, tmp_path: Path) -> None:
    log_path = tmp_path / "ops.log"
    middleware = [
        {"type": "log", "path": str(log_path), "ops": ["write", "create", "delete", "rename"]},
        {"type": "metrics", "listen": "127.0.0.1:0"},
        {
            "type": "acl",
            "rules": [
                {"path": "/secret/**", "uids": [1000], "effect": "hide"},
                {"path": "/ro/**", "uids": [1000], "ops": ["write", "create"], "effect": "deny"},
            ],
        },
        {"type": "cache", "block_size": "16KiB", "memory": "1MiB"},
        {
            "type": "idmap",
            "uid_map": [{"guest": 0, "host": 0}, {"guest": 1000, "host": 51000}],
            "gid_map": [{"guest": 0, "host": 0}, {"guest": 1000, "host": 51000}],
        },
    ]
    with serve(mountpoint, backend, middleware, cache="none") as served:
        source = tmp_path / "source"
        source.mkdir()
        make_tree(source)
        run("cp", "-a", f"{source}/.", str(mountpoint))
        run("diff", "-r", "--no-dereference", str(source), str(mountpoint))
        run("chmod", "-R", "go+rX", str(mountpoint))  # the test's tmp dir may be private
        for name in ("secret", "ro", "home"):
            (mountpoint / name).mkdir(mode=0o777)
            (mountpoint / name).chmod(0o777)
        (mountpoint / "secret" / "key").write_text("k")
        os.chown(mountpoint / "home", 1000, 1000)
        code = {
            "hidden": f"assert 'secret' not in os.listdir('{mountpoint}')",
            "hidden-stat": f"os.stat('{mountpoint}/secret/key')",
            "ro-create": f"open('{mountpoint}/ro/x', 'w')",
            "home-create": f"open('{mountpoint}/home/mine', 'w').write('mine')",
            "home-rename": f"os.rename('{mountpoint}/home/mine', '{mountpoint}/home/moved')",
            "read-tree": f"open('{mountpoint}/dir/sub/bin', 'rb').read()",
        }
        results = attempt_as(1000, code, Path("/"))
        assert results == {
            "hidden": "ok", "hidden-stat": "ENOENT", "ro-create": "EACCES", "home-create": "ok",
            "home-rename": "ok", "read-tree": "ok",
        }  # fmt: skip
        assert os.stat(mountpoint / "home" / "moved").st_uid == 1000
        assert host_stat(served, "/home/moved").st_uid == 51000
        assert (mountpoint / "home" / "moved").read_text() == "mine"
        shutil.rmtree(mountpoint / "dir")
        assert sorted(os.listdir(mountpoint)) == [
            "empty", "hard", "home", "link", "ro", "secret",
        ]  # fmt: skip
        metrics = served.middleware(MetricsMiddleware).exposition().decode()
    assert 'vfsframe_errors_total{errno="EACCES",op="create"} 1.0' in metrics
    assert 'vfsframe_operations_total{op="rename"} 1.0' in metrics
    lines = log_path.read_text().splitlines()
    assert any(" rename old='/home/mine' new='/home/moved' uid=1000 " in line for line in lines)
    assert any(" unlink '/dir/sub/bin' " in line for line in lines)
    assert not any(" getattr " in line for line in lines)
    assert SECRET not in log_path.read_text()
