"""acl in-process: globs, first-match order, effects, ids, op classes, both paths, readonly."""

from __future__ import annotations

import errno
import logging
import os
from typing import Any

import pytest
from pydantic import ValidationError
from vfsframe_plugins.acl import AclConfig, AclMiddleware
from vfsframe_plugins.acl.pathglob import GlobError, compile_glob

from vfsframe import ops
from vfsframe.chain import ShareChain

from .helpers import ALICE, BOB, ROOT, Fs, memory_chain, raises_errno


def acl_fs(**config: Any) -> Fs:
    fs = Fs(memory_chain([AclMiddleware(AclConfig(**config))]))
    return fs


def seeded(**config: Any) -> Fs:
    """A tree made as root without rules, then the acl put in front of it."""
    backend_fs = Fs(memory_chain([]))
    backend_fs.mkdir("/pub")
    backend_fs.mkdir("/secret")
    backend_fs.put("/secret/key", b"k")
    backend_fs.put("/pub/a", b"a")
    backend_fs.put("/pub/b.txt", b"b")
    chain = ShareChain(backend_fs.chain.backend, [AclMiddleware(AclConfig(**config))])
    return Fs(chain)


@pytest.mark.parametrize(
    ("pattern", "matching", "not_matching"),
    [
        ("/", ["/"], ["/a"]),
        ("/**", ["/", "/a", "/a/b/c"], []),
        ("/a/**", ["/a", "/a/b", "/a/b/c"], ["/ab", "/", "/b/a"]),
        ("/a/**/z", ["/a/z", "/a/b/z", "/a/b/c/z"], ["/a/bz", "/a/z/y"]),
        ("/*.txt", ["/x.txt", "/.txt"], ["/d/x.txt", "/x.txt2"]),
        ("/d?", ["/d1"], ["/d", "/d12"]),
        ("/[!x]y", ["/ay"], ["/xy"]),
        ("/[a-c]", ["/b"], ["/d"]),
        ("/dir/", ["/dir"], ["/dir/x"]),
        ("/a.b", ["/a.b"], ["/axb"]),
    ],
)
def test_glob(pattern: str, matching: list[str], not_matching: list[str]) -> None:
    regex = compile_glob(pattern)
    for path in matching:
        assert regex.match(path), (pattern, path)
    for path in not_matching:
        assert not regex.match(path), (pattern, path)


@pytest.mark.parametrize("pattern", ["relative/**", "/a//b", "/a**", "/x[ab"])
def test_bad_globs(pattern: str) -> None:
    with pytest.raises(GlobError):
        compile_glob(pattern)


def test_rules_are_validated_with_their_field_path() -> None:
    with pytest.raises(ValidationError) as info:
        AclConfig(rules=[{"path": "/ok", "effect": "deny"}, {"path": "/a**", "effect": "deny"}])
    assert info.value.errors()[0]["loc"] == ("rules", 1, "path")
    with pytest.raises(ValidationError) as info:
        AclConfig(rules=[{"path": "/a", "ops": ["read", "execute"], "effect": "deny"}])
    assert info.value.errors()[0]["loc"] == ("rules", 0, "ops", 1)
    with pytest.raises(ValidationError):
        AclConfig(rules=[{"path": "/a", "effect": "block"}])


def test_first_matching_rule_wins() -> None:
    fs = seeded(
        rules=[
            {"path": "/pub/*.txt", "effect": "allow"},
            {"path": "/pub/**", "ops": ["read"], "effect": "deny"},
        ]
    )
    assert fs.get("/pub/b.txt") == b"b"
    with raises_errno(errno.EACCES):
        fs.get("/pub/a")
    assert fs.stat("/pub/a").st_size == 1  # a lookup is never denied, only hidden


def test_default_effect() -> None:
    fs = seeded(rules=[{"path": "/pub/**", "effect": "allow"}], default="deny")
    assert fs.get("/pub/a") == b"a"
    with raises_errno(errno.EACCES):
        fs.get("/secret/key")
    with raises_errno(errno.EACCES):
        fs.listdir("/")


def test_hide_removes_names_from_lookups_listings_and_every_operation() -> None:
    fs = seeded(rules=[{"path": "/secret/**", "effect": "hide"}])
    assert fs.listdir("/") == ["pub"]
    with raises_errno(errno.ENOENT):
        fs.stat("/secret")
    with raises_errno(errno.ENOENT):
        fs.stat("/secret/key")
    with raises_errno(errno.ENOENT):
        fs.get("/secret/key")
    with raises_errno(errno.ENOENT):
        fs.put("/secret/new", b"x")
    with raises_errno(errno.ENOENT):
        fs.rename("/pub/a", "/secret/a")
    assert fs.get("/pub/a") == b"a"


def test_rules_by_uid_and_gid() -> None:
    fs = seeded(
        rules=[
            {"path": "/secret/**", "uids": [0], "effect": "allow"},
            {"path": "/secret/**", "gids": [2000], "effect": "deny"},
            {"path": "/secret/**", "effect": "hide"},
        ]
    )
    assert fs.as_(ROOT).get("/secret/key") == b"k"
    with raises_errno(errno.EACCES):
        fs.as_(BOB).get("/secret/key")
    with raises_errno(errno.ENOENT):
        fs.as_(ALICE).get("/secret/key")
    assert fs.as_(ALICE).listdir("/") == ["pub"]
    assert fs.as_(BOB).listdir("/") == ["pub", "secret"]  # denied, not hidden


@pytest.mark.parametrize(
    ("op_class", "allowed_action", "denied_action"),
    [
        ("read", "listdir", "get"),
        ("write", "get", "write"),
        ("create", "write", "create"),
        ("delete", "create", "unlink"),
        ("rename", "unlink", "rename"),
        ("setattr", "rename", "chmod"),
        ("xattr", "chmod", "setxattr"),
        ("list", "setxattr", "listdir"),
    ],
)
def test_each_op_class_is_refused_alone(
    op_class: str, allowed_action: str, denied_action: str
) -> None:
    fs = seeded(rules=[{"path": "/pub/**", "ops": [op_class], "effect": "deny"}])
    ACTIONS[allowed_action](fs)
    with raises_errno(errno.EACCES):
        ACTIONS[denied_action](fs)


def _write(fs: Fs) -> None:
    fh = fs.open("/pub/a", os.O_WRONLY)
    fs.write("/pub/a", fh, 0, b"x")


ACTIONS = {
    "get": lambda fs: fs.get("/pub/a"),
    "write": _write,
    "create": lambda fs: fs.create("/pub/new"),
    "unlink": lambda fs: fs.unlink("/pub/b.txt"),
    "rename": lambda fs: fs.rename("/pub/a", "/pub/c"),
    "chmod": lambda fs: fs.setattr("/pub/a", mode=0o600),
    "setxattr": lambda fs: fs.setxattr("/pub/a", "user.x", b"1"),
    "listdir": lambda fs: fs.listdir("/pub"),
}


def test_rename_and_link_are_checked_at_both_ends() -> None:
    fs = seeded(rules=[{"path": "/secret/**", "ops": ["rename", "create"], "effect": "deny"}])
    with raises_errno(errno.EACCES):
        fs.rename("/pub/a", "/secret/a")  # into
    with raises_errno(errno.EACCES):
        fs.rename("/secret/key", "/pub/key")  # out of
    with raises_errno(errno.EACCES):
        fs.link("/secret/key", "/pub/key")  # a second name for a protected file
    with raises_errno(errno.EACCES):
        fs.link("/pub/a", "/secret/a")
    fs.rename("/pub/a", "/pub/c")
    fs.link("/pub/c", "/pub/d")


def test_readonly_refuses_every_change_with_erofs() -> None:
    fs = seeded(readonly=True)
    assert fs.get("/pub/a") == b"a"
    assert fs.listdir("/pub") == ["a", "b.txt"]
    for action in ("write", "create", "unlink", "rename", "chmod", "setxattr"):
        with raises_errno(errno.EROFS):
            ACTIONS[action](fs)
    with raises_errno(errno.EROFS):
        fs.mkdir("/d")
    with raises_errno(errno.EROFS):
        fs.open("/pub/a", os.O_RDONLY | os.O_TRUNC)


def test_denials_are_logged_with_uid_and_pid(caplog: pytest.LogCaptureFixture) -> None:
    fs = seeded(rules=[{"path": "/pub/a", "ops": ["read"], "effect": "deny"}])
    with caplog.at_level(logging.WARNING, logger="vfsframe.acl"), raises_errno(errno.EACCES):
        fs.as_(ALICE).get("/pub/a")
    message = caplog.records[-1].getMessage()
    assert "EACCES open /pub/a" in message
    assert "uid=1000" in message and "pid=11" in message and "rule 0" in message


def test_access_is_checked_per_mask_bit() -> None:
    fs = seeded(rules=[{"path": "/pub/a", "ops": ["write"], "effect": "deny"}])
    fs.chain.access(ops.AccessRequest(ROOT, "/pub/a", os.R_OK))
    with raises_errno(errno.EACCES):
        fs.chain.access(ops.AccessRequest(ROOT, "/pub/a", os.W_OK))
