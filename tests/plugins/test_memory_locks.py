"""POSIX record locks and flock locks of the memory backend, and concurrent use."""

from __future__ import annotations

import errno
import fcntl
import os
import threading
import time

import pytest

from tests.plugins.memfs_helpers import USER, MemFs, raises_errno
from vfsframe import ops

EOF_ = 2**63 - 1
RD, WR, UN = fcntl.F_RDLCK, fcntl.F_WRLCK, fcntl.F_UNLCK


def _setlk(fs: MemFs, fh: object, owner: int, start: int, end: int, kind: int, **kw) -> None:
    lock = ops.Lock(start, end, kind, pid=owner)
    fs.chain.setlk(ops.SetlkRequest(USER, "/f", fh, owner, lock, **kw))


def _getlk(fs: MemFs, fh: object, owner: int, start: int, end: int, kind: int) -> ops.Lock:
    return fs.chain.getlk(ops.GetlkRequest(USER, "/f", fh, owner, ops.Lock(start, end, kind, 0)))


@pytest.fixture
def fh(fs: MemFs) -> object:
    handle, _ = fs.create("/f")
    return handle


def test_write_locks_conflict_between_owners(fs: MemFs, fh: object) -> None:
    _setlk(fs, fh, 1, 0, 99, WR)
    with raises_errno(errno.EAGAIN):
        _setlk(fs, fh, 2, 50, 50, RD)
    _setlk(fs, fh, 2, 100, 200, WR)  # adjacent, no overlap
    _setlk(fs, fh, 1, 10, 20, RD)  # one owner never conflicts with itself
    found = _getlk(fs, fh, 2, 0, EOF_, WR)
    assert found.type in (RD, WR) and found.pid == 1
    assert _getlk(fs, fh, 3, 300, 400, WR).type == UN
    assert _getlk(fs, fh, 1, 0, 99, WR).type == UN


def test_read_locks_are_shared(fs: MemFs, fh: object) -> None:
    _setlk(fs, fh, 1, 0, EOF_, RD)
    _setlk(fs, fh, 2, 0, EOF_, RD)
    with raises_errno(errno.EAGAIN):
        _setlk(fs, fh, 3, 5, 5, WR)
    assert _getlk(fs, fh, 3, 5, 5, RD).type == UN
    found = _getlk(fs, fh, 3, 5, 5, WR)
    assert found == ops.Lock(0, EOF_, RD, found.pid) and found.pid in (1, 2)


def test_unlock_splits_a_range(fs: MemFs, fh: object) -> None:
    _setlk(fs, fh, 1, 0, 99, WR)
    _setlk(fs, fh, 1, 40, 59, UN)
    _setlk(fs, fh, 2, 40, 59, WR)  # the hole in the middle is free now
    with raises_errno(errno.EAGAIN):
        _setlk(fs, fh, 3, 39, 39, RD)
    with raises_errno(errno.EAGAIN):
        _setlk(fs, fh, 3, 60, 60, RD)
    assert _getlk(fs, fh, 3, 0, 10, RD) == ops.Lock(0, 39, WR, 1)
    assert _getlk(fs, fh, 3, 70, 80, RD) == ops.Lock(60, 99, WR, 1)


def test_downgrade_part_of_a_range_and_merge_back(fs: MemFs, fh: object) -> None:
    _setlk(fs, fh, 1, 0, 99, WR)
    _setlk(fs, fh, 1, 20, 29, RD)
    _setlk(fs, fh, 2, 25, 25, RD)  # read-read over the downgraded part
    with raises_errno(errno.EAGAIN):
        _setlk(fs, fh, 2, 19, 19, RD)
    _setlk(fs, fh, 2, 25, 25, UN)
    _setlk(fs, fh, 1, 20, 29, WR)  # upgrade again: one 0-99 write lock
    assert _getlk(fs, fh, 2, 50, 50, RD) == ops.Lock(0, 99, WR, 1)


def test_getlk_and_setlk_validate(fs: MemFs, fh: object) -> None:
    with raises_errno(errno.EINVAL):
        _setlk(fs, fh, 1, 10, 5, WR)
    with raises_errno(errno.EINVAL):
        _setlk(fs, fh, 1, -1, 5, WR)
    with raises_errno(errno.EINVAL):
        _getlk(fs, fh, 1, 0, 5, 99)
    with raises_errno(errno.EINVAL):
        _getlk(fs, fh, 1, 0, 5, UN)


def test_setlkw_waits_until_the_holder_unlocks(fs: MemFs, fh: object) -> None:
    _setlk(fs, fh, 1, 0, EOF_, WR)
    granted = threading.Event()

    def waiter() -> None:
        _setlk(fs, fh, 2, 10, 20, WR, wait=True)
        granted.set()

    thread = threading.Thread(target=waiter)
    thread.start()
    assert not granted.wait(0.2)  # still blocked
    # The backend stays usable while a SETLKW waits: it does not hold the tree lock.
    fs.make_file("/other", b"x")
    assert _getlk(fs, fh, 3, 10, 10, RD).pid == 1
    _setlk(fs, fh, 1, 0, 9, UN)  # not enough yet
    assert not granted.wait(0.1)
    _setlk(fs, fh, 1, 0, EOF_, UN)
    assert granted.wait(5)
    thread.join(5)
    assert _getlk(fs, fh, 3, 15, 15, RD) == ops.Lock(10, 20, WR, 2)


def test_setlkw_reports_a_deadlock(fs: MemFs, fh: object) -> None:
    _setlk(fs, fh, 1, 0, 9, WR)
    _setlk(fs, fh, 2, 10, 19, WR)
    granted = threading.Event()

    def first_waits_for_second() -> None:
        _setlk(fs, fh, 1, 10, 10, WR, wait=True)
        granted.set()

    thread = threading.Thread(target=first_waits_for_second)
    thread.start()
    deadline = time.monotonic() + 5
    while 1 not in fs.chain.backend._waits_for:  # until owner 1 is really waiting
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with raises_errno(errno.EDEADLK):
        _setlk(fs, fh, 2, 5, 5, WR, wait=True)  # would wait for 1, which waits for 2
    _setlk(fs, fh, 2, 10, 19, UN)
    assert granted.wait(5)
    thread.join(5)


def test_flush_releases_the_owners_posix_locks(fs: MemFs, fh: object) -> None:
    _setlk(fs, fh, 1, 0, 9, WR)
    _setlk(fs, fh, 2, 10, 19, WR)
    fs.chain.flush(ops.FlushRequest(USER, "/f", fh, lock_owner=1))
    _setlk(fs, fh, 3, 0, 9, WR)
    with raises_errno(errno.EAGAIN):
        _setlk(fs, fh, 3, 10, 10, WR)


def test_flush_wakes_a_waiter(fs: MemFs, fh: object) -> None:
    _setlk(fs, fh, 1, 0, 0, WR)
    done = threading.Event()
    thread = threading.Thread(target=lambda: (_setlk(fs, fh, 2, 0, 0, RD, wait=True), done.set()))
    thread.start()
    assert not done.wait(0.1)
    fs.chain.flush(ops.FlushRequest(USER, "/f", fh, lock_owner=1))
    assert done.wait(5)
    thread.join(5)


def test_flock_locks_are_per_open_file_and_apart_from_posix(fs: MemFs) -> None:
    one, _ = fs.create("/f")
    two = fs.open("/f")
    _setlk(fs, one, 11, 0, EOF_, WR, flock=True)
    with raises_errno(errno.EAGAIN):
        _setlk(fs, two, 22, 0, EOF_, RD, flock=True)
    _setlk(fs, two, 33, 0, EOF_, WR)  # a POSIX lock does not meet the flock lock
    fs.release("/f", one)  # the open file is gone: its flock lock goes with it
    _setlk(fs, two, 22, 0, EOF_, WR, flock=True)
    fs.release("/f", two)


def test_release_drops_posix_locks_taken_through_the_handle(fs: MemFs) -> None:
    one, _ = fs.create("/f")
    two = fs.open("/f")
    _setlk(fs, one, 1, 0, 100, WR)
    fs.release("/f", one)
    _setlk(fs, two, 2, 0, 100, WR)
    fs.release("/f", two)


def test_close_wakes_waiters_with_eintr(fs: MemFs, fh: object) -> None:
    _setlk(fs, fh, 1, 0, 0, WR)
    errors: list[int] = []

    def waiter() -> None:
        try:
            _setlk(fs, fh, 2, 0, 0, WR, wait=True)
        except OSError as exc:
            errors.append(exc.errno or 0)

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.05)
    fs.chain.close()
    thread.join(5)
    assert errors == [errno.EINTR]


# -- concurrency ----------------------------------------------------------------------------


def test_concurrent_writers_keep_every_byte(fs: MemFs) -> None:
    threads = 8
    rounds = 200
    block = 1000
    shared, _ = fs.create("/shared")
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            path = f"/own{n}"
            own, _ = fs.create(path)
            for i in range(rounds):
                # Each thread owns interleaved blocks of the shared file...
                offset = (i * threads + n) * block
                fs.write("/shared", shared, offset, bytes([n + 1]) * block)
                # ...and appends to its own file, and churns names in its own directory.
                fs.write(path, own, 0, b"%05d," % i, flags=os.O_APPEND)
                fs.mkdir(f"/d{n}-{i}")
                fs.rename(f"/d{n}-{i}", f"/e{n}-{i}")
            fs.release(path, own)
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(60)
    assert not errors
    data = fs.read("/shared", shared, 0, threads * rounds * block)
    assert len(data) == threads * rounds * block
    for index in range(threads * rounds):
        chunk = data[index * block : (index + 1) * block]
        assert chunk == bytes([index % threads + 1]) * block
    for n in range(threads):
        expect = b"".join(b"%05d," % i for i in range(rounds))
        assert fs.read_file(f"/own{n}") == expect
    assert fs.stat("/").st_nlink == 2 + threads * rounds
