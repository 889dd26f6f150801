"""The cache middleware in front of the object-store backend, over a slow "network".

Run as root:  .venv/bin/python bench/cache_objectstore.py [--latency-ms 5] [--files 1000]

A local store whose every request (HEAD, GET, PUT, LIST, ...) first sleeps ``--latency-ms``
stands in for an object store across a network. The same tree is mounted through the host
kernel twice, without and with the `cache` middleware, both with the share's kernel cache
policy `none` (every operation reaches the server: what a share coherent with other clients of
the bucket uses; with the kernel's own caches the repeated reads would never leave the page
cache). Workloads, each timed as the wall-clock time of the whole command:

- working set: read every file of a 32 x 256 KiB set, 5 passes (the first one is cold);
- ls -lR: of a --files tree (10 directories), cold (first run after mounting) and warm
  (second run).

Reported as seconds and as the ratio without/with the cache.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vfsframe_plugins.cache import CacheConfig, CacheMiddleware
from vfsframe_plugins.objectstore import ObjectStore, ObjectStoreBackend, ObjectStoreConfig
from vfsframe_plugins.objectstore.local import LocalStore, LocalStoreConfig

from bench.common import timed
from vfsframe.chain import ShareChain
from vfsframe.session import SessionOptions
from vfsframe.testing.mount import mounted

WORKING_SET = 32
WORKING_FILE = 256 << 10
PASSES = 5
DIRECTORIES = 10


class SlowStore(ObjectStore):
    """Delegates to a real store after sleeping, once per request a network store would make."""

    def __init__(self, inner: ObjectStore, latency: float) -> None:
        self.inner = inner
        self.latency = latency
        self.requests = 0
        self.min_part_size = inner.min_part_size
        self.metadata_limit = inner.metadata_limit

    def _wait(self) -> None:
        self.requests += 1
        time.sleep(self.latency)

    def head(self, key: str) -> Any:
        self._wait()
        return self.inner.head(key)

    def open_reader(self, key: str, info: Any = None) -> Any:
        reader = self.inner.open_reader(key, info)
        store = self

        class SlowReader(type(reader)):  # type: ignore[misc]
            def read_into(self, offset: int, buffers: Sequence[memoryview]) -> int:
                store._wait()  # a ranged GET
                return reader.read_into(offset, buffers)

            def close(self) -> None:
                reader.close()

        slow = SlowReader.__new__(SlowReader)
        slow.size = reader.size
        return slow

    def put(self, key: str, data: Any, metadata: dict[str, str]) -> Any:
        self._wait()
        return self.inner.put(key, data, metadata)

    def create_multipart(self, key: str, metadata: dict[str, str]) -> str:
        self._wait()
        return self.inner.create_multipart(key, metadata)

    def upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> Any:
        self._wait()
        return self.inner.upload_part(key, upload_id, number, data)

    def complete_multipart(self, key: str, upload_id: str, parts: Sequence[Any]) -> Any:
        self._wait()
        return self.inner.complete_multipart(key, upload_id, parts)

    def abort_multipart(self, key: str, upload_id: str) -> None:
        self._wait()
        self.inner.abort_multipart(key, upload_id)

    def list(
        self, prefix: str, delimiter: str | None = "/", token: str | None = None, limit: int = 1000
    ) -> Any:
        self._wait()
        return self.inner.list(prefix, delimiter, token, limit)

    def delete(self, key: str) -> None:
        self._wait()
        self.inner.delete(key)

    def copy(self, source: str, target: str, metadata: dict[str, str] | None = None) -> Any:
        self._wait()
        return self.inner.copy(source, target, metadata)

    def close(self) -> None:
        self.inner.close()


def seed(root: Path, files: int) -> None:
    """The objects, written straight into the local store (no latency)."""
    store = LocalStore(LocalStoreConfig(root=root, fsync=False))
    payload = bytes(range(256)) * (WORKING_FILE // 256)
    for index in range(WORKING_SET):
        store.put(f"set/f{index:03}", payload, {})
    for index in range(files):
        store.put(f"tree/d{index % DIRECTORIES:02}/f{index:04}", b"x" * 100, {})
    store.close()


@contextlib.contextmanager
def share(root: Path, mountpoint: Path, latency: float, cached: bool) -> Iterator[SlowStore]:
    config = ObjectStoreConfig(store={"type": "local", "root": str(root), "fsync": False})
    store = SlowStore(LocalStore(LocalStoreConfig(root=root, fsync=False)), latency)
    middleware = []
    if cached:
        middleware.append(
            CacheMiddleware(
                CacheConfig(attr_ttl=60, dir_ttl=60, memory="256MiB", block_size="128KiB")
            )
        )
    chain = ShareChain(ObjectStoreBackend(config, store), middleware)
    try:
        with mounted(mountpoint, chain, SessionOptions(cache="none", name="bench")):
            yield store
    finally:
        chain.close()


def read_working_set(mountpoint: Path) -> None:
    for _ in range(PASSES):
        for index in range(WORKING_SET):
            with open(mountpoint / "set" / f"f{index:03}", "rb", buffering=0) as file:
                while file.read(128 << 10):
                    pass


def ls_lr(mountpoint: Path) -> None:
    subprocess.run(["ls", "-lR", str(mountpoint / "tree")], check=True, capture_output=True)


def run(latency_ms: float, files: int) -> list[str]:
    results: dict[bool, dict[str, tuple[float, int]]] = {}
    base = Path(tempfile.mkdtemp(prefix="vfsframe-bench-"))
    try:
        root = base / "objects"
        seed(root, files)
        for cached in (False, True):
            mountpoint = base / "mnt"
            mountpoint.mkdir(exist_ok=True)
            figures: dict[str, tuple[float, int]] = {}
            with share(root, mountpoint, latency_ms / 1000, cached) as store:
                before = store.requests
                figures["working set, 5 passes"] = (
                    timed(lambda m=mountpoint: read_working_set(m)),
                    store.requests - before,
                )
            with share(root, mountpoint, latency_ms / 1000, cached) as store:
                for label in ("ls -lR cold", "ls -lR warm"):
                    before = store.requests
                    figures[label] = (timed(lambda m=mountpoint: ls_lr(m)), store.requests - before)
            results[cached] = figures
    finally:
        shutil.rmtree(base, ignore_errors=True)
    lines = [
        f"objectstore (local store, {latency_ms:g} ms per request), share cache=none; "
        f"{WORKING_SET} x {WORKING_FILE >> 10} KiB working set, {files}-file tree",
        f"  {'workload':<24}{'no cache':>20}{'cache':>20}{'ratio':>8}",
    ]
    for label, (plain, plain_requests) in results[False].items():
        with_cache, cache_requests = results[True][label]
        lines.append(
            f"  {label:<24}{f'{plain:.2f} s ({plain_requests} req)':>20}"
            f"{f'{with_cache:.2f} s ({cache_requests} req)':>20}{plain / with_cache:>7.1f}x"
        )
    return lines


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=5.0)
    parser.add_argument("--files", type=int, default=1000)
    args = parser.parse_args()
    print("\n".join(run(args.latency_ms, args.files)))
