"""Mounting a share with middleware through the host kernel, and running commands as users."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import require_fuse
from vfsframe.chain import ShareChain
from vfsframe.plugin import default_registry
from vfsframe.runtime import build_chain, session_options
from vfsframe.testing.mount import mounted, share_config

# The system Python: reachable by every uid, unlike the project's virtualenv.
SYSTEM_PYTHON = "/usr/bin/python3"

BACKENDS = ["memory"] + (["passthrough"] if "passthrough" in default_registry().backends else [])
HAVE_OBJECTSTORE = "objectstore" in default_registry().backends


@dataclass
class Served:
    mountpoint: Path
    chain: ShareChain
    host_root: Path | None  # the passthrough directory, when that is the backend

    def middleware(self, kind: type) -> Any:
        return next(m for m in self.chain.middleware if isinstance(m, kind))


@contextlib.contextmanager
def host_directory() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="vfsframe-mw-host-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def serve(
    mountpoint: Path, backend: str, middleware: list[dict[str, Any]], **share: Any
) -> Iterator[Served]:
    """Mount ``backend`` ("memory", "passthrough" or "objectstore" over a local store) with
    ``middleware`` (config dicts)."""
    require_fuse()
    with contextlib.ExitStack() as stack:
        host_root = None
        if backend == "passthrough":
            host_root = stack.enter_context(host_directory())
            backend_config: dict[str, Any] = {"type": "passthrough", "root": str(host_root)}
        elif backend == "objectstore":
            objects = stack.enter_context(host_directory())
            store = {"type": "local", "root": str(objects), "fsync": False}
            backend_config = {"type": "objectstore", "store": store}
        else:
            backend_config = {"type": "memory", "capacity": "256MiB"}
        config = share_config(backend_config, middleware=middleware, **share)
        chain = build_chain(config.backend, config.middleware)
        stack.callback(chain.close)
        stack.enter_context(mounted(mountpoint, chain, session_options(config)))
        yield Served(mountpoint, chain, host_root)


# Run as another user: each action is attempted and its errno name (or "ok") reported.
_ACTIONS_SCRIPT = r"""
import errno, json, os, sys
results = {}
for name, code in json.loads(sys.argv[1]).items():
    try:
        exec(code, {"os": os})
        results[name] = "ok"
    except OSError as exc:
        results[name] = errno.errorcode.get(exc.errno, str(exc.errno))
print(json.dumps(results))
"""


def attempt_as(uid: int, actions: dict[str, str], cwd: Path) -> dict[str, str]:
    """Run each action (Python source using ``os``) as ``uid``; its errno name or "ok"."""
    command = [
        "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
        SYSTEM_PYTHON, "-c", _ACTIONS_SCRIPT, json.dumps(actions),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def run(*command: str, user: int | None = None, cwd: Path | None = None) -> str:
    if user is not None:
        command = ("setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *command)
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{command} failed: {done.stderr}"
    return done.stdout


def chown_tree(root: Path, uid: int) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), uid, uid)
