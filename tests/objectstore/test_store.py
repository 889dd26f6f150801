"""The object-store interface, in process, against both built-in stores (S3: moto over HTTP)."""

from __future__ import annotations

import errno
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from vfsframe_plugins.objectstore import ObjectStore, Part, StaleObjectError
from vfsframe_plugins.objectstore.local import LocalStore, LocalStoreConfig
from vfsframe_plugins.objectstore.s3 import S3Store, S3StoreConfig

from tests.objectstore.conftest import s3_client, s3_store

MIB = 1 << 20


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path, moto_endpoint: str) -> Iterator[Any]:
    if request.param == "local":
        opened: ObjectStore = LocalStore(LocalStoreConfig(root=tmp_path / "objects"))
    else:
        name = f"unit-{tmp_path.name.lower().replace('_', '-')}"[:60].rstrip("-")
        s3_client(moto_endpoint).create_bucket(Bucket=name)
        opened = S3Store(S3StoreConfig(**s3_store(name, moto_endpoint)))
    opened.check()
    try:
        yield opened
    finally:
        opened.close()


def keys(page_objects: list[Any]) -> list[str]:
    return [o.key for o in page_objects]


def test_put_head_ranged_get(store: ObjectStore) -> None:
    info = store.put("dir/obj", b"0123456789", {"vfs-mode": "100644", "color": "blue"})
    assert info.size == 10
    head = store.head("dir/obj")
    assert head.size == 10 and head.metadata == {"vfs-mode": "100644", "color": "blue"}
    assert head.version == info.version
    assert store.get("dir/obj") == b"0123456789"
    assert store.get("dir/obj", 3, 7) == b"3456"
    assert store.get("dir/obj", 8) == b"89"
    with pytest.raises(FileNotFoundError):
        store.head("dir/missing")
    with pytest.raises(FileNotFoundError):
        store.head("dir")  # a prefix is not an object


def test_reader_scatters_and_pins_a_version(store: ObjectStore) -> None:
    store.put("f", b"a" * 100 + b"b" * 100, {})
    reader = store.open_reader("f")
    try:
        first, second = bytearray(50), bytearray(100)
        assert reader.read_into(75, [memoryview(first), memoryview(second)]) == 125
        assert bytes(first) == b"a" * 25 + b"b" * 25
        assert bytes(second[:75]) == b"b" * 75
        assert reader.read_into(200, [memoryview(first)]) == 0
        store.put("f", b"new", {})
        if isinstance(store, LocalStore):
            # The open file is the old version: reads go on, consistently.
            assert reader.read_into(0, [memoryview(first)]) == 50
            assert bytes(first) == b"a" * 50
        else:
            with pytest.raises(StaleObjectError) as caught:
                reader.read_into(0, [memoryview(first)])
            assert caught.value.errno == errno.ESTALE
    finally:
        reader.close()


def test_list_pages_with_and_without_delimiter(store: ObjectStore) -> None:
    names = [f"a/{i:02d}" for i in range(25)] + ["a/sub/x", "a/sub/y/z", "a/", "ab", "b"]
    for name in names:
        store.put(name, b"x", {})
    objects, prefixes, token, pages = [], [], None, 0
    while True:
        page = store.list("a/", "/", token, limit=10)
        objects += keys(page.objects)
        prefixes += page.prefixes
        pages += 1
        token = page.token
        if token is None:
            break
    assert pages == 3
    assert objects == ["a/"] + [f"a/{i:02d}" for i in range(25)]
    assert prefixes == ["a/sub/"]
    everything = [o.key for page in store.list_all("a/") for o in page.objects]
    assert everything == sorted(n for n in names if n.startswith("a/"))
    assert keys(store.list("a", "/").objects) == ["ab"]
    assert store.list("a", "/").prefixes == ["a/"]
    assert store.list("nothing/", "/").objects == []


def test_delete_copy_and_metadata_replacement(store: ObjectStore) -> None:
    store.put("src", b"payload", {"k": "1"})
    copied = store.copy("src", "dst/copy")
    assert store.get("dst/copy") == b"payload"
    assert copied.metadata == {"k": "1"}
    replaced = store.copy("src", "src", {"k": "2"})  # metadata in place
    assert store.head("src").metadata == {"k": "2"}
    assert replaced.size == 7 and store.get("src") == b"payload"
    store.delete("src")
    store.delete("src")  # deleting a missing key is fine, as on S3
    with pytest.raises(FileNotFoundError):
        store.head("src")
    store.delete_many(["dst/copy", "missing"])
    assert store.list("", None).objects == []


def test_multipart_upload(store: ObjectStore) -> None:
    upload = store.create_multipart("big", {"vfs-mode": "100600"})
    first, second = b"1" * (5 * MIB), b"2" * 1000
    parts = [
        store.upload_part("big", upload, 2, second),
        store.upload_part("big", upload, 1, first),
    ]
    info = store.complete_multipart("big", upload, parts)
    assert info.size == len(first) + len(second)
    assert store.get("big", 5 * MIB - 2, 5 * MIB + 2) == b"1122"
    assert store.head("big").metadata == {"vfs-mode": "100600"}
    aborted = store.create_multipart("gone", {})
    store.upload_part("gone", aborted, 1, b"x")
    store.abort_multipart("gone", aborted)
    with pytest.raises(FileNotFoundError):
        store.head("gone")
    assert isinstance(parts[0], Part)


def test_s3_check_says_what_is_wrong(moto_endpoint: str) -> None:
    missing = S3Store(S3StoreConfig(**s3_store("no-such-bucket", moto_endpoint)))
    with pytest.raises(OSError) as caught:
        missing.check()
    assert caught.value.errno == errno.ENOENT
    assert "does not exist" in str(caught.value) and "no-such-bucket" in str(caught.value)
    unreachable = S3Store(
        S3StoreConfig(**s3_store("some-bucket", "http://127.0.0.1:9", connect_timeout=0.5))
    )
    with pytest.raises(OSError) as caught:
        unreachable.check()
    assert caught.value.errno == errno.EIO and "cannot reach" in str(caught.value)


def test_local_layout_keeps_object_and_prefix_apart(tmp_path: Path) -> None:
    store = LocalStore(LocalStoreConfig(root=tmp_path))
    store.put("a", b"file a", {})
    store.put("a/b", b"under a", {})
    store.put("a/", b"", {})
    assert store.get("a") == b"file a" and store.get("a/b") == b"under a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.d", "a.o"]
    store.delete("a/b")
    store.delete("a/")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.o"]  # empty prefix dirs pruned
    with pytest.raises(OSError) as caught:
        store.put("x" * 254, b"", {})
    assert caught.value.errno == errno.ENAMETOOLONG


def test_s3_prefix_confines_the_store(moto_endpoint: str, bucket: str) -> None:
    client = s3_client(moto_endpoint)
    client.put_object(Bucket=bucket, Key="outside", Body=b"not ours")
    store = S3Store(S3StoreConfig(**s3_store(bucket, moto_endpoint, prefix="team/data")))
    store.put("dir/file", b"ours", {})
    assert client.get_object(Bucket=bucket, Key="team/data/dir/file")["Body"].read() == b"ours"
    assert [o.key for o in store.list("", None).objects] == ["dir/file"]
    assert store.list("", "/").prefixes == ["dir/"]
    store.copy("dir/file", "copy")
    assert store.get("copy") == b"ours"
    with pytest.raises(FileNotFoundError):
        store.head("outside")
    store.close()


class ScriptedEndpoint:
    """An HTTP endpoint answering every request with the next status of a script (the last
    one repeats), counting requests: throttling and refusals without a real service."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.requests = 0
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                index = min(endpoint.requests, len(endpoint.statuses) - 1)
                endpoint.requests += 1
                self.send_response(endpoint.statuses[index])
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_HEAD = do_GET = do_PUT = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted() -> Iterator[Any]:
    endpoints: list[ScriptedEndpoint] = []

    def start(statuses: list[int]) -> ScriptedEndpoint:
        endpoints.append(ScriptedEndpoint(statuses))
        return endpoints[-1]

    yield start
    for endpoint in endpoints:
        endpoint.close()


def test_s3_retries_throttling_and_5xx_then_succeeds(scripted: Any) -> None:
    endpoint = scripted([503, 500, 200])
    store = S3Store(S3StoreConfig(**s3_store("bucket", endpoint.url, max_attempts=3)))
    store.check()
    assert endpoint.requests == 3
    store.close()


def test_s3_gives_up_after_max_attempts_with_eio(scripted: Any) -> None:
    endpoint = scripted([503])
    store = S3Store(S3StoreConfig(**s3_store("bucket", endpoint.url, max_attempts=2)))
    with pytest.raises(OSError) as caught:
        store.head("key")
    assert caught.value.errno == errno.EIO
    assert endpoint.requests == 2
    store.close()


def test_s3_refused_credentials_are_named_at_start(scripted: Any) -> None:
    endpoint = scripted([403])
    store = S3Store(S3StoreConfig(**s3_store("bucket", endpoint.url)))
    with pytest.raises(OSError) as caught:
        store.check()
    assert caught.value.errno == errno.EACCES
    assert "check the credentials" in str(caught.value)
    store.close()


def test_s3_without_any_credentials_says_where_to_put_them(
    monkeypatch: pytest.MonkeyPatch, moto_endpoint: str
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    options = s3_store("bucket", moto_endpoint)
    del options["access_key_id"], options["secret_access_key"]
    store = S3Store(S3StoreConfig(**options))
    with pytest.raises(OSError) as caught:
        store.check()
    assert caught.value.errno == errno.EACCES and "no AWS credentials" in str(caught.value)
    store.close()
