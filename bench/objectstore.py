"""Host-mount benchmark of the objectstore backend against direct boto3 calls, same endpoint.

Run as root:  .venv/bin/python bench/objectstore.py [--mib 256] [--objects 10000] [--repeat 3]

A moto S3 server runs as its own process on 127.0.0.1. In the same run, each workload is done
through a vfsframe host mount (`vfsframe mount`, its own process, as a user runs it) and with
boto3 from this process, and reported as the median of --repeat runs with the ratio
mount/direct:

- seq write: a file of --mib MiB in 1 MiB write(2) calls, then fsync and close; direct:
  upload_fileobj with the backend's multipart settings (8 MiB parts, 4 at once).
- seq read: the file in 1 MiB read(2) calls after dropping the page cache; direct: one
  streamed GET read in 1 MiB pieces.
- list: every name of a --objects object prefix (os.listdir, fresh mount); direct:
  list_objects_v2 pages with the delimiter. "list+stat" adds an lstat of every name (ls -l).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import drop_caches, timed, vfsframe_mount
from vfsframe.testing.ports import free_port

BLOCK = 1 << 20
PART = 8 << 20
BUCKET = "bench"


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    port = free_port()
    binary = Path(sys.executable).parent / "moto_server"
    server = subprocess.Popen(
        [str(binary), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("moto_server did not start")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


def client(endpoint: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
        config=Config(max_pool_connections=32, s3={"addressing_style": "path"}),
    )


def mounted(
    endpoint: str, listing_attributes: str = "head"
) -> contextlib.AbstractContextManager[Path]:
    return vfsframe_mount(
        '[share.backend]\ntype = "objectstore"\n'
        f'listing_attributes = "{listing_attributes}"\n'
        f'[share.backend.store]\ntype = "s3"\nbucket = "{BUCKET}"\nendpoint_url = "{endpoint}"\n'
        'region = "us-east-1"\naddressing_style = "path"\n'
        'access_key_id = "bench"\nsecret_access_key = "bench"\n'
    )


def mount_write(root: Path, block: bytes, mib: int) -> None:
    fd = os.open(root / "seq", os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    try:
        for _ in range(mib):
            os.write(fd, block)
        os.fsync(fd)
    finally:
        os.close(fd)


def mount_read(root: Path) -> None:
    buffer = bytearray(BLOCK)
    fd = os.open(root / "seq", os.O_RDONLY)
    try:
        while os.readv(fd, [buffer]):
            pass
    finally:
        os.close(fd)


def direct_write(s3: Any, data: bytes) -> None:
    from boto3.s3.transfer import TransferConfig

    transfer = TransferConfig(multipart_threshold=PART, multipart_chunksize=PART, max_concurrency=4)
    s3.upload_fileobj(io.BytesIO(data), BUCKET, "seq-direct", Config=transfer)


def direct_read(s3: Any) -> None:
    body = s3.get_object(Bucket=BUCKET, Key="seq-direct")["Body"]
    while body.read(BLOCK):
        pass


def direct_ranged_read(s3: Any) -> None:
    """The same object in 8 MiB ranged GETs, one after another (what readahead does)."""
    size = s3.head_object(Bucket=BUCKET, Key="seq-direct")["ContentLength"]
    for start in range(0, size, PART):
        end = min(size, start + PART) - 1
        body = s3.get_object(Bucket=BUCKET, Key="seq-direct", Range=f"bytes={start}-{end}")["Body"]
        while body.read(BLOCK):
            pass


def direct_list(s3: Any) -> int:
    names = 0
    for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=BUCKET, Prefix="list/", Delimiter="/"
    ):
        names += len(page.get("Contents", ())) + len(page.get("CommonPrefixes", ()))
    return names


def fill_prefix(s3: Any, objects: int) -> None:
    def put(index: int) -> None:
        s3.put_object(Bucket=BUCKET, Key=f"list/object-{index:06d}", Body=b"x" * 100)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(objects)))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root (mounting needs it)", file=sys.stderr)
        return 2
    samples: dict[str, list[float]] = {}

    def record(name: str, value: float) -> None:
        samples.setdefault(name, []).append(value)

    block = os.urandom(BLOCK)
    data = block * args.mib
    size_mb = args.mib * BLOCK / 1e6
    with moto_server() as endpoint:
        s3 = client(endpoint)
        s3.create_bucket(Bucket=BUCKET)
        print(f"filling list/ with {args.objects} objects ...", flush=True)
        fill_prefix(s3, args.objects)
        for run in range(args.repeat):
            record("seq write direct", size_mb / timed(lambda: direct_write(s3, data)))
            record("seq read direct", size_mb / timed(lambda: direct_read(s3)))
            record("seq read ranged direct", size_mb / timed(lambda: direct_ranged_read(s3)))
            record("list direct", args.objects / timed(lambda: direct_list(s3)))
            with mounted(endpoint) as root:
                record(
                    "seq write mount", size_mb / timed(lambda: mount_write(root, block, args.mib))
                )
                drop_caches()
                record("seq read mount", size_mb / timed(lambda: mount_read(root)))
            with mounted(endpoint) as root:  # a fresh mount for each listing: nothing cached

                def list_all() -> None:
                    names = len(os.listdir(root / "list"))
                    assert names == args.objects, names

                record("list mount", args.objects / timed(list_all))
            with mounted(endpoint, listing_attributes="listing") as root:
                record(
                    "list (listing attrs) mount",
                    args.objects / timed(lambda: os.listdir(root / "list")),
                )
            with mounted(endpoint) as root:

                def list_and_stat() -> None:
                    with os.scandir(root / "list") as entries:
                        for entry in entries:
                            entry.stat(follow_symlinks=False)

                record("list+stat mount", args.objects / timed(list_and_stat))
            print(
                f"  run {run + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in samples.items()),
                flush=True,
            )

    median = {key: statistics.median(values) for key, values in samples.items()}
    print()
    print(
        f"{args.mib} MiB sequential in 1 MiB calls; {args.objects}-object prefix; median of {args.repeat}"
    )
    print(f"{'workload':<10} {'unit':<8} {'mount':>10} {'direct':>10} {'ratio':>8}   what")
    for workload, unit, mount_key, direct_key in (
        ("seq write", "MB/s", "seq write mount", "seq write direct"),
        ("seq read", "MB/s", "seq read mount", "seq read direct"),
        ("seq read", "MB/s", "seq read mount", "seq read ranged direct"),
        ("list", "names/s", "list mount", "list direct"),
        ("list", "names/s", "list (listing attrs) mount", "list direct"),
        ("list+stat", "names/s", "list+stat mount", "list direct"),
    ):
        mount, direct = median[mount_key], median[direct_key]
        print(
            f"{workload:<10} {unit:<8} {mount:>10,.0f} {direct:>10,.0f} {mount / direct:>8.2f}"
            f"   {mount_key} / {direct_key}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
