"""log in-process: the line format, filters, the slow-op threshold, and no file data."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from vfsframe_plugins.log import LogConfig, LogMiddleware

from .helpers import ALICE, Fs, memory_chain, raises_errno

SECRET = b"correct horse battery staple"


def logged(tmp_path: Path, **config: Any) -> tuple[Fs, Path]:
    path = tmp_path / "ops.log"
    fs = Fs(memory_chain([LogMiddleware(LogConfig(path=path, **config))]), ALICE)
    return fs, path


def test_text_lines(tmp_path: Path) -> None:
    fs, path = logged(tmp_path)
    fs.put("/f", SECRET)
    with raises_errno(2):
        fs.stat("/missing")
    fs.rename("/f", "/g")
    lines = path.read_text().splitlines()
    ops_seen = [line.split()[1] for line in lines]
    assert ops_seen == ["create", "write", "release", "getattr", "rename"]
    write = lines[1]
    assert "'/f'" in write and "uid=1000" in write and "pid=11" in write
    assert f"ok bytes={len(SECRET)}" in write and write.endswith("ms")
    assert "getattr '/missing'" in lines[3] and " ENOENT " in lines[3]
    assert "old='/f' new='/g'" in lines[4]
    assert SECRET.decode() not in path.read_text()


def test_json_lines(tmp_path: Path) -> None:
    fs, path = logged(tmp_path, format="json")
    fs.put("/f", SECRET)
    fs.get("/f")
    fs.setxattr("/f", "user.secret", SECRET)
    with raises_errno(61):  # ENODATA
        fs.getxattr("/f", "user.none")
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    assert {"time", "op", "path", "uid", "gid", "pid", "result", "ms"} <= set(entries[0])
    read = next(e for e in entries if e["op"] == "read")
    assert read["result"] == "ok" and read["bytes"] == len(SECRET) and read["uid"] == 1000
    failed = entries[-1]
    assert failed["op"] == "getxattr" and failed["errno"] == "ENODATA"
    assert SECRET.decode() not in path.read_text()


def test_op_filter_by_name_and_class(tmp_path: Path) -> None:
    fs, path = logged(tmp_path, ops=["rename", "create", "setattr"])
    fs.put("/f", b"x")
    fs.setattr("/f", mode=0o600)
    fs.mkdir("/d")  # class create
    fs.rename("/f", "/d/f")
    fs.get("/d/f")
    assert [line.split()[1] for line in path.read_text().splitlines()] == [
        "create", "setattr", "mkdir", "rename",
    ]  # fmt: skip


def test_slow_threshold(tmp_path: Path) -> None:
    fs, path = logged(tmp_path, slow_ms=60_000)
    fs.put("/f", b"x")
    assert path.read_text() == ""
    fs, path = logged(tmp_path / "..", slow_ms=0)
    fs.put("/g", b"x")
    assert len(path.read_text().splitlines()) == 3


def test_stderr_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    fs = Fs(memory_chain([LogMiddleware(LogConfig())]))
    fs.mkdir("/d")
    assert "mkdir '/d' uid=0" in capsys.readouterr().err


def test_unknown_op_names_are_refused() -> None:
    with pytest.raises(ValidationError) as info:
        LogConfig(ops=["read", "frobnicate"])
    assert "frobnicate" in str(info.value)
    assert info.value.errors()[0]["loc"] == ("ops",)


def test_log_file_is_appended_and_closed(tmp_path: Path) -> None:
    path = tmp_path / "ops.log"
    path.write_text("earlier\n")
    middleware = LogMiddleware(LogConfig(path=path))
    chain = memory_chain([middleware])
    Fs(chain).mkdir("/d")
    chain.close()
    assert path.read_text().startswith("earlier\n")
    assert os.path.getsize(path) > len("earlier\n")
