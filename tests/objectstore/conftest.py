"""Fixtures of the objectstore tests: a moto S3 endpoint on loopback behind a TCP proxy that a
test can cut and restore (an endpoint outage), and mounts of both stores."""

from __future__ import annotations

import contextlib
import itertools
import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from vfsframe_plugins.objectstore import ObjectStoreBackend, ObjectStoreConfig, open_store

from tests.conftest import require_fuse
from vfsframe.testing.mount import mounted_share, share_config

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")

CREDENTIALS = {"access_key_id": "testing", "secret_access_key": "testing"}
_bucket_numbers = itertools.count()


class TcpProxy:
    """Forwards 127.0.0.1:port to an upstream port. ``cut`` closes the listener and every
    connection (the endpoint is down: connections are refused); ``restore`` listens on the
    same port again."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = upstream_port
        self.port = 0
        self._listener: socket.socket | None = None
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            connections, self._connections = self._connections, set()
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream))
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._connections |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(1 << 20):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
            with self._lock:
                self._connections.discard(source)
                self._connections.discard(sink)
            source.close()

    def close(self) -> None:
        self.cut()


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's S3 over real HTTP on loopback, for the whole session."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def proxy(moto_endpoint: str) -> Iterator[TcpProxy]:
    proxy = TcpProxy(int(moto_endpoint.rsplit(":", 1)[1]))
    try:
        yield proxy
    finally:
        proxy.close()


def s3_client(endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def bucket(moto_endpoint: str) -> str:
    name = f"vfsframe-test-{next(_bucket_numbers)}"
    s3_client(moto_endpoint).create_bucket(Bucket=name)
    return name


def s3_store(bucket: str, endpoint: str, **options: Any) -> dict[str, Any]:
    return {
        "type": "s3",
        "bucket": bucket,
        "endpoint_url": endpoint,
        "region": "us-east-1",
        "addressing_style": "path",
        "max_attempts": 2,
        "connect_timeout": 1.0,
        "read_timeout": 10.0,
        **CREDENTIALS,
        **options,
    }


@pytest.fixture(params=["local", "s3"])
def store_config(
    request: pytest.FixtureRequest, tmp_path: Path, proxy: TcpProxy, bucket: str
) -> dict[str, Any]:
    """One store of each kind: a local directory, or a moto bucket reached through the proxy."""
    if request.param == "local":
        return {"type": "local", "root": str(tmp_path / "objects")}
    return s3_store(bucket, f"http://127.0.0.1:{proxy.port}")


@contextlib.contextmanager
def objectstore_mount(
    mountpoint: Path, store: dict[str, Any], share: dict[str, Any] | None = None, **options: Any
) -> Iterator[Path]:
    """Mount an objectstore share; ``options`` go to the backend, ``share`` to the share."""
    require_fuse()
    config = share_config({"type": "objectstore", "store": store, **options}, **(share or {}))
    with mounted_share(mountpoint, config):
        yield mountpoint


@pytest.fixture
def mounted(mountpoint: Path, store_config: dict[str, Any]) -> Iterator[Path]:
    with objectstore_mount(mountpoint, store_config) as path:
        yield path


# moto's HTTP server logs every request at INFO: keep failure reports readable.
logging.getLogger("werkzeug").setLevel(logging.WARNING)


@contextlib.contextmanager
def backend_over(store: dict[str, Any]) -> Iterator[ObjectStoreBackend]:
    """An in-process backend over ``store``, closed afterwards."""
    config = ObjectStoreConfig(store=store)
    built = ObjectStoreBackend(config, open_store(config))
    try:
        yield built
    finally:
        built.close()


# A backend over a fresh local store, for the tests that drive it in process.
@pytest.fixture
def backend(tmp_path: Path) -> Iterator[ObjectStoreBackend]:
    with backend_over({"type": "local", "root": str(tmp_path / "objects")}) as built:
        yield built


# The same over each store (local, and moto over HTTP), for tests whose outcome may depend on
# how the store answers.
@pytest.fixture
def backend_on_each_store(store_config: dict[str, Any]) -> Iterator[ObjectStoreBackend]:
    with backend_over(store_config) as built:
        yield built
