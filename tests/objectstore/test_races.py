"""The objectstore backend's open/release/setxattr races, each interleaving forced with events:
a store call that waits at a gate, and an inode lock that says when someone waits for it.

close(2) returns before the kernel's RELEASE is served, and the last release uploads the
file while holding the inode's lock; opens and xattr changes that arrive meanwhile must end
up in the store, not on an inode the release has just retired. An open whose store answer is
late must not build its file on a version that a chmod, xattr change, unlink or rename by path
has replaced meanwhile. Each race runs on both stores (local, and S3 over HTTP)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
from vfsframe_plugins.objectstore import ObjectStoreBackend
from vfsframe_plugins.objectstore.files import FileHandle

from vfsframe import ops

CTX = ops.Context(uid=0, gid=0, umask=0o022)
WAIT = 10.0  # seconds: a step that does not happen by then is a hang, reported as a failure


@pytest.fixture
def backend(backend_on_each_store: ObjectStoreBackend) -> ObjectStoreBackend:
    """Every race on both stores: what an open finds and stages differs between them."""
    return backend_on_each_store


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(2, thread_name_prefix="racer") as executor:
        yield executor


class Gate:
    """Makes a store method wait in the threads named ``racer`` until ``open()``, before
    the call or, with ``answered``, after it (a reply that is late); ``entered`` is set when
    a call waits."""

    def __init__(self, backend: ObjectStoreBackend, method: str, answered: bool = False) -> None:
        self.entered = threading.Event()
        self._opened = threading.Event()
        real: Callable[..., Any] = getattr(backend.store, method)

        def gated(*args: Any, **kwargs: Any) -> Any:
            result = real(*args, **kwargs) if answered else None
            if threading.current_thread().name.startswith("racer") and not self._opened.is_set():
                self.entered.set()
                assert self._opened.wait(WAIT), "the gate was never opened"
            return result if answered else real(*args, **kwargs)

        setattr(backend.store, method, gated)  # the instance's attribute shadows the method

    def wait_entered(self) -> None:
        assert self.entered.wait(WAIT), "no call reached the gate"

    def open(self) -> None:
        self._opened.set()


class WatchedLock:
    """An inode lock that sets ``progress`` when a thread has to wait for it."""

    def __init__(self, lock: Any, progress: threading.Event) -> None:
        self._lock = lock
        self._progress = progress

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if self._lock.acquire(blocking=False):
            return True
        if not blocking:
            return False
        self._progress.set()
        return bool(self._lock.acquire(timeout=timeout))

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> WatchedLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def watch_lock(handle: FileHandle, progress: threading.Event) -> None:
    handle.inode.lock = WatchedLock(handle.inode.lock, progress)  # type: ignore[assignment]


def settled(future: Future[Any], progress: threading.Event) -> None:
    """Wait until the call in ``future`` has returned or is waiting for the watched lock."""
    future.add_done_callback(lambda _: progress.set())
    assert progress.wait(WAIT), "the call neither returned nor waited for the inode lock"


def open_(backend: ObjectStoreBackend, flags: int = os.O_WRONLY, path: str = "/f") -> FileHandle:
    return backend.vfs_open(ops.OpenRequest(CTX, path, flags))


def write(backend: ObjectStoreBackend, fh: FileHandle, offset: int, data: bytes) -> None:
    req = ops.WriteRequest(CTX, "/f", fh, offset, [memoryview(data)], len(data), 0)
    assert backend.vfs_write(req) == len(data)


def close(backend: ObjectStoreBackend, fh: FileHandle) -> None:
    backend.vfs_flush(ops.FlushRequest(CTX, "/f", fh))
    backend.vfs_release(ops.ReleaseRequest(CTX, "/f", fh))


def stored(backend: ObjectStoreBackend) -> bytes:
    """The file's bytes in the store."""
    return bytes(backend.store.get("f"))


def new_server(backend: ObjectStoreBackend) -> ObjectStoreBackend:
    """A backend over the same store with nothing in process: it sees only what was stored."""
    return ObjectStoreBackend(backend.config, backend.store)


def stored_mode(backend: ObjectStoreBackend) -> int:
    """The file's permission bits as a new server would see them."""
    return new_server(backend).vfs_getattr(ops.GetattrRequest(CTX, "/f")).st_mode & 0o777


def xattr(backend: ObjectStoreBackend, name: str) -> bytes:
    """An xattr as a new server would see it."""
    return new_server(backend).vfs_getxattr(ops.GetxattrRequest(CTX, "/f", name))


def make_file(backend: ObjectStoreBackend, data: bytes) -> None:
    fh, _ = backend.vfs_create(ops.CreateRequest(CTX, "/f", os.O_RDWR, 0o644))
    write(backend, fh, 0, data)
    close(backend, fh)


def open_around(
    backend: ObjectStoreBackend,
    pool: ThreadPoolExecutor,
    change: Callable[[], object],
    flags: int = os.O_WRONLY,
    path: str = "/f",
) -> FileHandle:
    """Open ``path`` in a racer thread whose HEAD is answered, then held back while
    ``change`` runs here (the answer is late); the open's handle. (The file's requests
    below name /f whatever its path: the backend goes by the handle.)"""
    gate = Gate(backend, "head", answered=True)
    opening = pool.submit(open_, backend, flags, path)
    gate.wait_entered()
    change()
    gate.open()
    return opening.result(WAIT)


def write_tag_close(backend: ObjectStoreBackend, fh: FileHandle) -> None:
    """Writer 1's part: "AAAA" at 0, the xattr user.by=first, close."""
    write(backend, fh, 0, b"AAAA")
    backend.vfs_setxattr(ops.SetxattrRequest(CTX, "/f", "user.by", b"first", 0))
    close(backend, fh)


def test_an_open_during_the_last_release_upload_shares_the_file(
    backend: ObjectStoreBackend, pool: ThreadPoolExecutor
) -> None:
    """Writer 2 opens while writer 1's RELEASE uploads; writer 3 opens after it. Each writes
    its own region: none may be lost (writer 2 once joined the retired inode, writer 3 made
    a new one, and the later upload overwrote the other's region)."""
    make_file(backend, b"." * 12)
    first = open_(backend)
    write(backend, first, 0, b"AAAA")  # not flushed: the release uploads it
    progress = threading.Event()
    watch_lock(first, progress)
    gate = Gate(backend, "put")
    release = pool.submit(backend.vfs_release, ops.ReleaseRequest(CTX, "/f", first))
    gate.wait_entered()
    second_open = pool.submit(open_, backend)
    settled(second_open, progress)
    gate.open()
    release.result(WAIT)
    second = second_open.result(WAIT)
    third = open_(backend)
    write(backend, second, 4, b"BBBB")
    write(backend, third, 8, b"CCCC")
    close(backend, second)
    close(backend, third)
    assert stored(backend) == b"AAAABBBBCCCC"


@pytest.mark.parametrize("writer_1_opens", ["before", "during"])
def test_an_open_whose_answer_a_writer_overtook_keeps_that_writers_attributes(
    backend: ObjectStoreBackend, pool: ThreadPoolExecutor, writer_1_opens: str
) -> None:
    """Writer 2's HEAD is answered after writer 1 has written, set an xattr and closed.
    Writer 1 opened ``before`` (writer 2 finds its clean inode, and must not be overtaken
    by its release) or ``during`` writer 2's lookup (nothing open yet: the answer is stale,
    and writer 2 must ask again). Either way writer 2 must not upload its file over the old
    version's attributes."""
    make_file(backend, b"." * 8)
    if writer_1_opens == "before":
        first = open_(backend)
        second = open_around(backend, pool, lambda: write_tag_close(backend, first))
    else:  # the main thread's HEAD is not held back
        second = open_around(backend, pool, lambda: write_tag_close(backend, open_(backend)))
    write(backend, second, 4, b"BBBB")
    close(backend, second)
    assert stored(backend) == b"AAAABBBB"
    assert xattr(backend, "user.by") == b"first"


def test_a_setxattr_that_waited_for_the_last_release_reaches_the_store(
    backend: ObjectStoreBackend, pool: ThreadPoolExecutor
) -> None:
    """write, close, setxattr: the setxattr finds the file still open (RELEASE not served
    yet) and waits for the inode lock while the release uploads and retires the inode."""
    fh, _ = backend.vfs_create(ops.CreateRequest(CTX, "/f", os.O_RDWR, 0o644))
    write(backend, fh, 0, b"data")  # not flushed: the release uploads it
    progress = threading.Event()
    watch_lock(fh, progress)
    gate = Gate(backend, "put")
    release = pool.submit(backend.vfs_release, ops.ReleaseRequest(CTX, "/f", fh))
    gate.wait_entered()
    setxattr = pool.submit(
        backend.vfs_setxattr, ops.SetxattrRequest(CTX, "/f", "user.colour", b"blue", 0)
    )
    settled(setxattr, progress)
    gate.open()
    release.result(WAIT)
    setxattr.result(WAIT)
    assert xattr(backend, "user.colour") == b"blue"
    assert stored(backend) == b"data"


def test_a_setxattr_on_a_clean_open_file_survives_a_later_write(
    backend: ObjectStoreBackend,
) -> None:
    """An xattr set while a handle is open but unwritten goes straight to the store; the
    handle's later write and close upload the file with it, not with the old attributes."""
    make_file(backend, b"data")
    fh = open_(backend, os.O_RDWR)
    backend.vfs_setxattr(ops.SetxattrRequest(CTX, "/f", "user.colour", b"blue", 0))
    write(backend, fh, 0, b"DATA")
    close(backend, fh)
    assert xattr(backend, "user.colour") == b"blue"
    assert stored(backend) == b"DATA"


@pytest.mark.parametrize("change", ["chmod", "setxattr"])
def test_an_open_whose_lookup_a_change_by_path_overtook_looks_again(
    backend: ObjectStoreBackend, pool: ThreadPoolExecutor, change: str
) -> None:
    """A chmod or setxattr of a file nothing here has open goes to the store while an open's
    HEAD is on its way back with the old attributes. The open must not build its file on
    them: the handle's upload would put them back over the change."""
    make_file(backend, b"." * 8)
    if change == "chmod":
        fh = open_around(
            backend, pool, lambda: backend.vfs_setattr(ops.SetattrRequest(CTX, "/f", mode=0o600))
        )
    else:
        fh = open_around(
            backend,
            pool,
            lambda: backend.vfs_setxattr(ops.SetxattrRequest(CTX, "/f", "user.by", b"main", 0)),
        )
    write(backend, fh, 0, b"AAAA")
    close(backend, fh)
    assert stored(backend) == b"AAAA...."
    if change == "chmod":
        assert stored_mode(backend) == 0o600
    else:
        assert xattr(backend, "user.by") == b"main"


@pytest.mark.parametrize("change", ["unlink", "rename of its directory"])
def test_an_open_whose_lookup_a_removal_overtook_does_not_bring_the_file_back(
    backend: ObjectStoreBackend, pool: ThreadPoolExecutor, change: str
) -> None:
    """The HEAD of an ``O_TRUNC`` open (which downloads nothing) found /d/f just before an
    unlink removed it, or a rename moved /d to /e. The open may fail (ENOENT) or give a
    handle on the removed file, but writing through that handle must not store the old name
    again."""
    backend.vfs_mkdir(ops.MkdirRequest(CTX, "/d", 0o755))
    fh, _ = backend.vfs_create(ops.CreateRequest(CTX, "/d/f", os.O_RDWR, 0o644))
    close(backend, fh)

    def remove() -> None:
        if change == "unlink":
            backend.vfs_unlink(ops.UnlinkRequest(CTX, "/d/f"))
        else:
            backend.vfs_rename(ops.RenameRequest(CTX, "/d", "/e"))

    try:
        fh = open_around(backend, pool, remove, os.O_WRONLY | os.O_TRUNC, "/d/f")
    except FileNotFoundError:
        pass
    else:
        write(backend, fh, 0, b"AAAA")
        close(backend, fh)
    with pytest.raises(FileNotFoundError):
        new_server(backend).vfs_getattr(ops.GetattrRequest(CTX, "/d/f"))


def test_an_open_whose_lookup_a_rename_over_the_name_overtook_looks_again(
    backend: ObjectStoreBackend, pool: ThreadPoolExecutor
) -> None:
    """``mv g f`` replaces f while an open of f has the old f's HEAD on its way back. The
    open must get the file that now has the name, attributes and all."""
    make_file(backend, b"." * 8)
    fh, _ = backend.vfs_create(ops.CreateRequest(CTX, "/g", os.O_RDWR, 0o644))
    backend.vfs_write(ops.WriteRequest(CTX, "/g", fh, 0, [memoryview(b"gggggggg")], 8, 0))
    backend.vfs_setxattr(ops.SetxattrRequest(CTX, "/g", "user.by", b"g", 0))
    backend.vfs_flush(ops.FlushRequest(CTX, "/g", fh))
    backend.vfs_release(ops.ReleaseRequest(CTX, "/g", fh))
    rename = ops.RenameRequest(CTX, "/g", "/f")
    fh = open_around(backend, pool, lambda: backend.vfs_rename(rename))
    write(backend, fh, 0, b"AAAA")
    close(backend, fh)
    assert stored(backend) == b"AAAAgggg"
    assert xattr(backend, "user.by") == b"g"


def test_an_open_answered_while_a_chmod_is_under_way_waits_for_it(
    backend: ObjectStoreBackend, pool: ThreadPoolExecutor
) -> None:
    """The open's HEAD comes back while a chmod's store copy is still under way: the open
    must wait for the chmod and ask again, not build its file on the old mode."""
    make_file(backend, b"." * 8)
    head = Gate(backend, "head", answered=True)
    second_open = pool.submit(open_, backend)
    head.wait_entered()
    copy = Gate(backend, "copy")
    chmod = pool.submit(backend.vfs_setattr, ops.SetattrRequest(CTX, "/f", mode=0o600))
    deadline = time.monotonic() + WAIT
    while "/f" not in backend._changing:  # the chmod has marked the path (then waits for HEAD)
        assert time.monotonic() < deadline, "the chmod never started"
        time.sleep(0.001)
    head.open()
    copy.wait_entered()
    copy.open()
    chmod.result(WAIT)
    fh = second_open.result(WAIT)
    write(backend, fh, 0, b"AAAA")
    close(backend, fh)
    assert stored_mode(backend) == 0o600
