"""A third-party store, installed the way a package would install it (a distribution with an
entry point in the ``vfsframe.objectstores`` group), is configured and served by the unchanged
backend. Runs in a subprocess so that the entry point is seen from the start."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

STORE_MODULE = '''
"""A dict-backed store: what a GCS or Azure store package provides, minus the network."""

from __future__ import annotations

import itertools
import threading
import time
from typing import Literal

from pydantic import Field

from vfsframe_plugins.objectstore import (
    ListPage, ObjectInfo, ObjectReader, ObjectStore, Part, StoreConfig, StoreType,
)


class DictConfig(StoreConfig):
    type: Literal["dict"] = "dict"
    label: str = Field("default", description="A name, to show options validate.")


class DictReader(ObjectReader):
    def __init__(self, data: bytes) -> None:
        self.data, self.size = data, len(data)

    def read_into(self, offset, buffers):
        done = 0
        for buffer in buffers:
            piece = self.data[offset + done : offset + done + len(buffer)]
            buffer[: len(piece)] = piece
            done += len(piece)
        return done


class DictStore(ObjectStore):
    min_part_size = 1

    def __init__(self, config: DictConfig) -> None:
        self.objects: dict[str, tuple[bytes, dict[str, str], str]] = {}
        self.uploads: dict[str, tuple[dict[str, str], dict[int, bytes]]] = {}
        self.counter = itertools.count()
        self.lock = threading.Lock()

    def _info(self, key, with_metadata=True):
        data, metadata, version = self.objects[key]
        return ObjectInfo(key, len(data), 0, version, dict(metadata) if with_metadata else None)

    def head(self, key):
        with self.lock:
            if key not in self.objects:
                raise FileNotFoundError(2, "no such object", key)
            return self._info(key)

    def open_reader(self, key, info=None):
        with self.lock:
            if key not in self.objects:
                raise FileNotFoundError(2, "no such object", key)
            return DictReader(self.objects[key][0])

    def put(self, key, data, metadata):
        body = bytes(data) if isinstance(data, bytes | bytearray | memoryview) else data.read()
        with self.lock:
            self.objects[key] = (body, dict(metadata), str(next(self.counter)))
            return self._info(key)

    def create_multipart(self, key, metadata):
        upload = str(next(self.counter))
        self.uploads[upload] = (metadata, {})
        return upload

    def upload_part(self, key, upload_id, number, data):
        self.uploads[upload_id][1][number] = bytes(data)
        return Part(number, str(number))

    def complete_multipart(self, key, upload_id, parts):
        metadata, pieces = self.uploads.pop(upload_id)
        body = b"".join(pieces[p.number] for p in sorted(parts, key=lambda p: p.number))
        return self.put(key, body, metadata)

    def abort_multipart(self, key, upload_id):
        self.uploads.pop(upload_id, None)

    def list(self, prefix, delimiter="/", token=None, limit=1000):
        with self.lock:
            keys = sorted(k for k in self.objects if k.startswith(prefix))
        entries = []
        for key in keys:
            rest = key[len(prefix):]
            if delimiter and delimiter in rest:
                entry = prefix + rest.split(delimiter)[0] + delimiter
                if not entries or entries[-1] != (entry, True):
                    entries.append((entry, True))
            else:
                entries.append((key, False))
        if token is not None:
            entries = [e for e in entries if e[0] > token]
        page = ListPage()
        for name, is_prefix in entries[:limit]:
            if is_prefix:
                page.prefixes.append(name)
            else:
                with self.lock:
                    page.objects.append(self._info(name, with_metadata=False))
        if len(entries) > limit:
            page.token = entries[limit - 1][0]
        return page

    def delete(self, key):
        with self.lock:
            self.objects.pop(key, None)

    def copy(self, source, target, metadata=None):
        with self.lock:
            data, old, _ = self.objects[source]
        return self.put(target, data, old if metadata is None else metadata)


STORE = StoreType("dict", DictConfig, DictStore, summary="Objects in a dict.")
'''

SCRIPT = """
import os, stat
from vfsframe import ops
from vfsframe.config.loader import ConfigError, validate_config
from vfsframe.runtime import build_chain

document = {"share": [{"tag": "t", "backend": {
    "type": "objectstore", "store": {"type": "dict", "label": "x"}}}]}
share = validate_config(document).shares[0]
try:
    validate_config({"share": [{"tag": "t", "backend": {
        "type": "objectstore", "store": {"type": "dict", "nope": 1}}}]})
except ConfigError as exc:
    print("refused:", exc.problems[0])
chain = build_chain(share.backend)
ctx = ops.Context()
fh, _ = chain.create(ops.CreateRequest(ctx, "/file", os.O_RDWR, 0o640))
chain.write(ops.WriteRequest(ctx, "/file", fh, 0, [memoryview(b"third party")], 11))
chain.flush(ops.FlushRequest(ctx, "/file", fh))
chain.release(ops.ReleaseRequest(ctx, "/file", fh))
chain.mkdir(ops.MkdirRequest(ctx, "/dir", 0o755))
chain.rename(ops.RenameRequest(ctx, "/file", "/dir/moved"))
fh = chain.open(ops.OpenRequest(ctx, "/dir/moved", os.O_RDONLY))
print("read:", bytes(chain.read(ops.ReadRequest(ctx, "/dir/moved", fh, 0, 100))))
attr = chain.getattr(ops.GetattrRequest(ctx, "/dir/moved"))
print("mode:", oct(stat.S_IMODE(attr.st_mode)))
print("listing:", [e.name for e in chain.readdir(ops.ReaddirRequest(ctx, "/"))])
chain.close()
"""


def test_a_store_from_another_distribution(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "dict_store.py").write_text(STORE_MODULE)
    dist = site / "dict_store-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: dict-store\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[vfsframe.objectstores]\ndict = dict_store:STORE\n")
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "refused: share[0].backend.store.dict.nope: unknown option"
    assert lines[1:] == ["read: b'third party'", "mode: 0o640", "listing: ['dir']"]
