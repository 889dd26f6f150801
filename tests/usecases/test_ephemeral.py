"""An ephemeral guest with persistent storage (issue 10): a guest writes and fsyncs into three
shares of one `vfsframe serve` — passthrough (with the guest's writeback cache, so fsync is
what pushes data out of the guest), objectstore on the local store, objectstore on S3 (moto's
server on loopback) — and is killed with SIGKILL while still writing. Everything it had
fsynced must then be on the host / in the store, and a new guest on the same, still running
server must see it; data written after the last fsync may be lost, but nothing may be corrupt
(every file has its checksum alongside; the journal's records carry their own).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.guest.servers import SERVE
from vfsframe.testing.guestvm import GuestResult, GuestVM, Share, booted, fetch_kernel

from .two_guests import ServerProcess, build_guesttool

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")

pytestmark = [pytest.mark.guest, pytest.mark.timeout(1800)]
log = logging.getLogger(__name__)

TAGS = ("pt", "oslocal", "oss3")
BUCKET = "ephemeral"
SYNC_EVERY = 16  # journal records between fsyncs
SYNCED_BEFORE_KILL = 4 * SYNC_EVERY  # the kill comes once every journal has this many durable
RECORD = struct.Struct(">4sI")  # local store object header: b"VFSO", metadata length
RECORD_LEN = 8 + 1 + 16 + 1 + 4000 + 1  # a journal record (tests/usecases/guesttool.c)
WAIT = 600.0  # seconds a TCG guest on a busy host may take to get there

MOUNT = """
for tag in {tags}; do
    mkdir -p /mnt/$tag
    check $tag.mount "mount -t virtiofs $tag /mnt/$tag"
done
cp /mnt/pt/.tools/guesttool /tmp/gt && chmod 755 /tmp/gt || echo "CHECK guesttool fail"
"""

# Guest 1: closed files, each fsynced, with their checksums (fsynced too) and the directory;
# then a journal per share, fsynced every SYNC_EVERY records, until QEMU is killed.
WRITER = (
    MOUNT
    + """
for tag in {tags}; do
    M=/mnt/$tag
    check $tag.files "mkdir -p $M/files && for i in 1 2 3; do
        dd if=/dev/urandom of=$M/files/f\\$i bs=64k count=\\$((i * 3)) 2>/dev/null &&
        sync $M/files/f\\$i || exit 1; done &&
        cd $M/files && sha256sum f1 f2 f3 > SHA256SUMS && sync SHA256SUMS . && cd /"
done
echo FILES-SYNCED
for tag in {tags}; do /tmp/gt journal /mnt/$tag/journal $tag {sync_every} & done
sleep 3600
"""
)

# Guest 2: what survived, as the guest sees it.
READER = (
    MOUNT
    + """
for tag in {tags}; do
    check $tag.files-intact "cd /mnt/$tag/files && sha256sum -c SHA256SUMS"
    cd /
    if out=$(/tmp/gt verify /mnt/$tag/journal); then echo "CHECK $tag.journal ok"
    else echo "CHECK $tag.journal fail $out"; fi
    result $tag.journal "$out"
done
"""
)


@pytest.fixture(scope="module")
def kernel() -> Path:
    return fetch_kernel()


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 over real HTTP on loopback, with the bucket the share uses."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        _s3(endpoint).create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        server.stop()


def _s3(endpoint: str):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip


def _config(workdir: Path, endpoint: str, host_dir: Path, objects: Path) -> Path:
    sock = workdir / "sock"
    path = workdir / "ephemeral.toml"
    path.write_text(f"""
[[share]]
tag = "pt"
socket = "{sock / "pt.sock"}"
cache = "auto"
writeback_cache = true
backend = {{ type = "passthrough", root = "{host_dir}" }}

[[share]]
tag = "oslocal"
socket = "{sock / "oslocal.sock"}"
backend = {{ type = "objectstore", store = {{ type = "local", root = "{objects}" }} }}

[[share]]
tag = "oss3"
socket = "{sock / "oss3.sock"}"
[share.backend]
type = "objectstore"
[share.backend.store]
type = "s3"
bucket = "{BUCKET}"
endpoint_url = "{endpoint}"
region = "us-east-1"
addressing_style = "path"
access_key_id = "testing"
secret_access_key = "testing"
""")
    return path


class Stored:
    """Reads a share's files where they persist, without vfsframe: the host directory, the
    local store's object files, or the S3 bucket."""

    def __init__(self, host_dir: Path, objects: Path, endpoint: str) -> None:
        self.host_dir, self.objects, self.endpoint = host_dir, objects, endpoint

    def read(self, tag: str, key: str) -> bytes | None:
        if tag == "pt":
            path = self.host_dir / key
            return path.read_bytes() if path.exists() else None
        if tag == "oslocal":
            # key a/b is a.d/b.o: b"VFSO", a 4-byte metadata length, the JSON metadata, the data.
            *dirs, name = key.split("/")
            path = self.objects.joinpath(*(f"{d}.d" for d in dirs), f"{name}.o")
            if not path.exists():
                return None
            blob = path.read_bytes()
            magic, length = RECORD.unpack_from(blob)
            assert magic == b"VFSO"
            json.loads(blob[RECORD.size : RECORD.size + length])
            return blob[RECORD.size + length :]
        try:
            return _s3(self.endpoint).get_object(Bucket=BUCKET, Key=key)["Body"].read()
        except _s3(self.endpoint).exceptions.NoSuchKey:
            return None


def journal_records(data: bytes) -> tuple[int, bool]:
    """Whole records in a journal and whether a torn one ends it; AssertionError on a
    complete record that is not the one guesttool writes at that place."""
    whole, tail = divmod(len(data), RECORD_LEN)
    for index in range(whole):
        record = data[index * RECORD_LEN : (index + 1) * RECORD_LEN]
        seq, checksum, payload = record[:8], record[9:25], record[26:-1]
        assert int(seq) == index + 1 and record[8:9] == b" " and record[-1:] == b"\n", index
        assert int(checksum, 16) == _fnv1a(payload), f"record {index + 1} fails its checksum"
    return whole, tail != 0


def _fnv1a(data: bytes) -> int:
    h = 1469598103934665603
    for byte in data:
        h = ((h ^ byte) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h


def _synced(serial: str) -> dict[str, int]:
    synced = dict.fromkeys(TAGS, 0)
    for tag, count in re.findall(r"^SYNCED (\S+) (\d+)\r?$", serial, re.M):
        synced[tag] = max(synced[tag], int(count))
    return synced


class Outcome:
    def __init__(self) -> None:
        self.synced: dict[str, int] = {}
        self.stored_records: dict[str, int] = {}
        self.files: dict[str, dict[str, bytes | None]] = {}
        self.writer_serial = ""
        self.reader: GuestResult | None = None
        self.server_log = ""
        self.server_alive_after_kill = False


@pytest.fixture(scope="module")
def outcome(kernel: Path, s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    workdir = tmp_path_factory.mktemp("ephemeral")
    host_dir, objects = workdir / "host", workdir / "objects"
    host_dir.mkdir()
    host_dir.chmod(0o755)
    (host_dir / ".tools").mkdir()
    build_guesttool(host_dir / ".tools" / "guesttool")
    config = _config(workdir, s3_endpoint, host_dir, objects)
    sockets = [workdir / "sock" / f"{tag}.sock" for tag in TAGS]
    server = ServerProcess("vfsframe", [*SERVE, "serve", str(config)], sockets,
                           workdir / "serve.log")  # fmt: skip
    stored = Stored(host_dir, objects, s3_endpoint)
    shares = [Share(tag, sock) for tag, sock in zip(TAGS, sockets, strict=True)]
    result = Outcome()
    server.start()
    try:
        script = WRITER.format(tags=" ".join(TAGS), sync_every=SYNC_EVERY)
        with booted(script, shares, workdir / "writer", memory_mb=256, kernel=kernel) as vm:  # type: ignore[arg-type]
            _wait_until_synced(vm)
            time.sleep(1.0)  # writes after the last fsync are in flight now
            vm.kill()  # SIGKILL: no shutdown, no unmount, no last flush
            result.writer_serial = vm.serial()
        result.synced = _synced(result.writer_serial)
        time.sleep(1.0)  # the server notices the front-end is gone and resets the device
        result.server_alive_after_kill = server.proc is not None and server.proc.poll() is None
        for tag in TAGS:
            journal = stored.read(tag, "journal") or b""
            result.stored_records[tag] = journal_records(journal)[0]
            result.files[tag] = {
                name: stored.read(tag, f"files/{name}") for name in ("f1", "f2", "f3", "SHA256SUMS")
            }
        reader = READER.format(tags=" ".join(TAGS))
        vm = GuestVM(
            reader,
            shares,
            workdir / "reader",
            memory_mb=256,
            kernel=kernel,
        )
        try:
            vm.boot()
            result.reader = vm.wait(WAIT)
        finally:
            vm.kill()
    finally:
        server.stop()
        result.server_log = server.log()
    seen = result.reader.results if result.reader else {}
    log.warning(
        "after SIGKILL, journal records per share (fsynced / stored / seen by the new guest): %s",
        ", ".join(
            f"{tag} {result.synced[tag]}/{result.stored_records[tag]}/{seen.get(f'{tag}.journal')}"
            for tag in TAGS
        ),
    )
    return result


def _wait_until_synced(vm: GuestVM) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        serial = vm.serial()
        if "CHECK" in serial and " fail" in "".join(re.findall(r"^CHECK .*$", serial, re.M)):
            pytest.fail(f"the writer guest failed:\n{serial[-3000:]}")
        if all(count >= SYNCED_BEFORE_KILL for count in _synced(serial).values()):
            return
        if vm.proc is not None and vm.proc.poll() is not None:
            break
        time.sleep(0.2)
    pytest.fail(f"the writer guest never fsynced enough:\n{vm.serial()[-3000:]}\n{vm.qemu_log()}")


def test_writer_guest_wrote_and_fsynced_everywhere(outcome: Outcome) -> None:
    assert "FILES-SYNCED" in outcome.writer_serial
    checks = dict(re.findall(r"^CHECK (\S+) (ok|fail.*)\r?$", outcome.writer_serial, re.M))
    assert checks and all(v == "ok" for v in checks.values()), checks
    assert all(outcome.synced[tag] >= SYNCED_BEFORE_KILL for tag in TAGS), outcome.synced


def test_server_survives_the_guest_being_killed(outcome: Outcome) -> None:
    assert outcome.server_alive_after_kill, outcome.server_log[-3000:]


@pytest.mark.parametrize("tag", TAGS)
def test_every_fsynced_record_is_stored_and_none_is_corrupt(outcome: Outcome, tag: str) -> None:
    # journal_records (run in the fixture) already refused any corrupt complete record.
    assert outcome.stored_records[tag] >= outcome.synced[tag], (
        f"{tag}: {outcome.stored_records[tag]} records stored, {outcome.synced[tag]} fsynced"
    )


@pytest.mark.parametrize("tag", TAGS)
def test_fsynced_files_are_stored_whole(outcome: Outcome, tag: str) -> None:
    files = outcome.files[tag]
    sums = files["SHA256SUMS"]
    assert sums is not None, f"{tag}: SHA256SUMS not stored"
    for line in sums.decode().splitlines():
        digest, name = line.split()
        data = files[name]
        assert data is not None, f"{tag}: {name} not stored"
        assert hashlib.sha256(data).hexdigest() == digest, f"{tag}: {name} differs from its sum"


@pytest.mark.parametrize("tag", TAGS)
def test_a_new_guest_sees_what_was_fsynced(outcome: Outcome, tag: str) -> None:
    reader = outcome.reader
    assert reader is not None and reader.finished, reader.serial[-3000:] if reader else None
    assert reader.checks.get(f"{tag}.mount") == "ok"
    assert reader.checks.get(f"{tag}.files-intact") == "ok", reader.checks
    assert reader.checks.get(f"{tag}.journal") == "ok", reader.serial[-3000:]
    seen = dict(re.findall(r"(\w+)=(\d+)", reader.results[f"{tag}.journal"]))
    assert int(seen["records"]) >= outcome.synced[tag], (seen, outcome.synced[tag])


LOCK_WAITER = """
mkdir -p /mnt/x && mount -t virtiofs x /mnt/x && cp /mnt/x/.tools/guesttool /tmp/gt
/tmp/gt lock /mnt/x/lockfile W 0 &
sleep 2
echo WAITING
sleep 3600
"""


def test_a_guest_killed_while_waiting_for_a_lock_frees_its_socket(
    kernel: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The host holds a lock for good; a guest process blocks in F_SETLKW on it; QEMU is
    SIGKILLed. The server must drop that guest (its wait interrupted) and take the next."""
    workdir = tmp_path_factory.mktemp("lockwaiter")
    root = workdir / "dir"
    (root / ".tools").mkdir(parents=True)
    root.chmod(0o755)
    build_guesttool(root / ".tools" / "guesttool")
    (root / "lockfile").write_text("")
    sock = workdir / "x.sock"
    config = workdir / "x.toml"
    config.write_text(
        f'[[share]]\ntag = "x"\nsocket = "{sock}"\ncache = "none"\n'
        f'[share.backend]\ntype = "passthrough"\nroot = "{root}"\n'
    )
    server = ServerProcess("vfsframe", [*SERVE, "serve", str(config)], [sock],
                           workdir / "serve.log")  # fmt: skip
    holder = os.open(root / "lockfile", os.O_RDWR)
    fcntl.lockf(holder, fcntl.LOCK_EX)
    server.start()
    try:
        with booted(
            LOCK_WAITER, [Share("x", sock)], workdir / "vm", memory_mb=256, kernel=kernel
        ) as vm:  # type: ignore[arg-type]
            assert vm.wait_for("^WAITING", WAIT), vm.serial()[-2000:]
            time.sleep(1.0)
            vm.kill()
        deadline = time.monotonic() + 30
        while "disconnected; device reset" not in server.log():
            assert time.monotonic() < deadline, f"the dead guest was never dropped:\n{server.log()}"
            time.sleep(0.2)
    finally:
        server.stop()
        os.close(holder)
