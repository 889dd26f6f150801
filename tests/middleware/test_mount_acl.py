"""acl through the host kernel: every op class against allow, deny and hide, as two users.

The rules name uid 1000 only; uid 2000 runs the same actions as the control and must always
succeed. The share uses `cache = "none"`: uid-specific rules need the kernel to ask for every
lookup rather than answer from dentries another user's lookups filled.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from vfsframe_plugins._opclasses import OP_CLASSES

from .mounting import BACKENDS, attempt_as, serve

pytestmark = pytest.mark.mount

USER, CONTROL = 1000, 2000

# One action per op class, on its own directory /zone/<class>; seeded by root below.
ACTIONS = {
    "read": "open('{z}/read/f').read()",
    "write": "fd = os.open('{z}/write/f', os.O_WRONLY); os.write(fd, b'w'); os.close(fd)",
    "create": "os.close(os.open('{z}/create/new-{uid}', os.O_CREAT | os.O_WRONLY, 0o644))",
    "delete": "os.unlink('{z}/delete/f-{uid}')",
    "rename": "os.rename('{z}/rename/f-{uid}', '{z}/rename/g-{uid}')",
    "setattr": "os.chmod('{z}/setattr/f-{uid}', 0o600)",
    "xattr": "os.setxattr('{z}/xattr/f-{uid}', 'user.test', b'1')",
    "list": "os.listdir('{z}/list')",
}

EXPECTED = {"allow": "ok", "deny": "EACCES", "hide": "ENOENT"}


def seed(zone: Path) -> None:
    for op_class in OP_CLASSES:
        directory = zone / op_class
        directory.mkdir(parents=True)
        directory.chmod(0o777)
        (directory / "f").write_text("data")
        (directory / "f").chmod(0o666)
        for uid in (USER, CONTROL):
            own = directory / f"f-{uid}"
            own.write_text("data")
            os.chown(own, uid, uid)


def test_every_op_class_is_checked_where_it_is_named() -> None:
    assert set(ACTIONS) == set(OP_CLASSES)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("effect", ["allow", "deny", "hide"])
def test_acl_matrix(mountpoint: Path, backend: str, effect: str) -> None:
    rules = [
        {"path": f"/zone/{op_class}/**", "uids": [USER], "ops": [op_class], "effect": effect}
        for op_class in OP_CLASSES
    ]
    acl = {"type": "acl", "rules": rules, "default": "allow"}
    with serve(mountpoint, backend, [acl], cache="none"):
        zone = mountpoint / "zone"
        seed(zone)
        for uid in (USER, CONTROL):
            actions = {op_class: code.format(z=zone, uid=uid) for op_class, code in ACTIONS.items()}
            results = attempt_as(uid, actions, cwd=Path("/"))
            expected = EXPECTED[effect] if uid == USER else "ok"
            assert results == dict.fromkeys(ACTIONS, expected), f"uid {uid}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_hidden_names_are_absent_for_one_user_only(mountpoint: Path, backend: str) -> None:
    acl = {
        "type": "acl",
        "rules": [{"path": "/secret/**", "uids": [USER], "effect": "hide"}],
    }
    with serve(mountpoint, backend, [acl], cache="none"):
        (mountpoint / "secret").mkdir(mode=0o755)
        (mountpoint / "secret" / "key").write_text("k")
        (mountpoint / "secret" / "key").chmod(0o644)
        (mountpoint / "public").write_text("p")
        (mountpoint / "public").chmod(0o644)
        code = {
            "ls": "os.listdir('{m}')",
            "stat": "os.stat('{m}/secret')",
            "read": "open('{m}/secret/key').read()",
            "dotdot-walk": "os.stat('{m}/secret/../public')",
        }
        hidden = attempt_as(USER, {k: v.format(m=mountpoint) for k, v in code.items()}, Path("/"))
        assert hidden == {"ls": "ok", "stat": "ENOENT", "read": "ENOENT", "dotdot-walk": "ENOENT"}
        shown = attempt_as(CONTROL, {k: v.format(m=mountpoint) for k, v in code.items()}, Path("/"))
        assert set(shown.values()) == {"ok"}
        listing = attempt_as(
            USER, {"names": f"assert os.listdir('{mountpoint}') == ['public']"}, Path("/")
        )
        assert listing == {"names": "ok"}


@pytest.mark.parametrize("backend", BACKENDS)
def test_readonly_share(mountpoint: Path, backend: str) -> None:
    with serve(mountpoint, backend, [{"type": "acl", "readonly": True}]):
        code = {
            "create": "open('{m}/new', 'w')",
            "mkdir": "os.mkdir('{m}/d')",
            "chmod": "os.chmod('{m}', 0o700)",
            "read": "os.listdir('{m}')",
        }
        results = attempt_as(0, {k: v.format(m=mountpoint) for k, v in code.items()}, Path("/"))
        assert results == {"create": "EROFS", "mkdir": "EROFS", "chmod": "EROFS", "read": "ok"}
