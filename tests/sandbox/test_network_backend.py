"""A backend that declares the network (the S3 object store) keeps it inside the sandbox: a
sandboxed `vfsframe serve` (namespace, seccomp kill) writes through to a moto S3 endpoint."""

from __future__ import annotations

import json
import signal
import struct
import subprocess
from collections.abc import Iterator

import pytest

from tests.guest.servers import SERVE
from tests.virtio.test_serve_cli import FUSE_INIT, INIT_IN, fuse_call, wait_for
from vfsframe.testing.virtio_driver import TestFrontEnd

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")

FUSE_MKDIR = 9
MKDIR_IN = struct.Struct("<II")  # mode, umask


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def test_s3_store_reaches_its_endpoint_from_the_sandbox(tmp_path, endpoint) -> None:
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
    client.create_bucket(Bucket="sandboxed")
    sock = tmp_path / "s3.sock"
    store = {"type": "s3", "bucket": "sandboxed", "endpoint_url": endpoint,
             "region": "us-east-1", "addressing_style": "path",
             "access_key_id": "testing", "secret_access_key": "testing"}  # fmt: skip
    config = tmp_path / "s3.json"
    config.write_text(json.dumps({"share": [{"tag": "s3", "socket": str(sock), "backend": {
        "type": "objectstore", "store": store}}]}))  # fmt: skip
    proc = subprocess.Popen([*SERVE, "serve", str(config), "--sandbox", "namespace",
                             "--seccomp", "kill"], stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_for(sock, proc)
        fe = TestFrontEnd(socket_path=sock)
        try:
            fe.start()
            fuse_call(fe, FUSE_INIT, 1, 0, INIT_IN.pack(7, 31, 1 << 17, 0))
            fuse_call(fe, FUSE_MKDIR, 2, 1, MKDIR_IN.pack(0o755, 0o022) + b"made-inside\0")
        finally:
            fe.close()
        keys = [o["Key"] for o in client.list_objects_v2(Bucket="sandboxed").get("Contents", [])]
        assert any(key.startswith("made-inside") for key in keys), keys
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "sandbox namespace entered" in err
