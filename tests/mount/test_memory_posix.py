"""The memory backend mounted through the host kernel, driven with os calls and ordinary tools."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.mount

libc = ctypes.CDLL(None, use_errno=True)
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
AT_FDCWD = -100


def renameat2(old: Path, new: Path, flags: int) -> None:
    if libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def run(*command: str, cwd: Path | None = None, user: int | None = None) -> str:
    if user is not None:
        command = ("setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *command)
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, f"{command} failed: {done.stderr}"
    return done.stdout


def make_tree(root: Path) -> None:
    """A tree with every file type and some awkward names."""
    (root / "dir" / "sub").mkdir(parents=True)
    (root / "dir" / "file.txt").write_text("hello\n" * 1000)
    (root / "dir" / "sub" / "bin").write_bytes(os.urandom(300_000))
    (root / "name with spaces \u00e9").write_text("x")
    (root / "empty").touch()
    os.symlink("dir/file.txt", root / "link")
    os.symlink("/nonexistent/target", root / "dangling")
    os.link(root / "dir" / "file.txt", root / "hardlink")
    os.mkfifo(root / "fifo")
    os.mknod(root / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    with open(root / "sparse", "wb") as f:
        f.seek(10 << 20)
        f.write(b"end")
    os.chmod(root / "dir" / "file.txt", 0o640)
    os.utime(root / "empty", ns=(1_000_000_123, 2_000_000_456))


def test_cp_a_and_diff(memory_mount: Path, tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    make_tree(source)
    run("cp", "-a", f"{source}/.", str(memory_mount))
    run(
        "diff", "-r", "--no-dereference", "-x", "fifo", "-x", "null", str(source), str(memory_mount)
    )
    st = os.lstat(memory_mount / "empty")
    assert (st.st_atime_ns, st.st_mtime_ns) == (1_000_000_123, 2_000_000_456)
    assert stat.S_ISFIFO(os.lstat(memory_mount / "fifo").st_mode)
    assert os.lstat(memory_mount / "null").st_rdev == os.makedev(1, 3)
    assert os.readlink(memory_mount / "dangling") == "/nonexistent/target"
    assert (
        os.lstat(memory_mount / "hardlink").st_ino == os.lstat(memory_mount / "dir/file.txt").st_ino
    )


def test_tar_round_trip_every_file_type(memory_mount: Path, tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    make_tree(source)
    archive = tmp_path / "tree.tar"
    run("tar", "--xattrs", "-cSf", str(archive), "-C", str(source), ".")
    run("tar", "--xattrs", "-xSf", str(archive), "-C", str(memory_mount))
    run("tar", "-df", str(archive), "-C", str(memory_mount))  # --compare: every attribute
    back = tmp_path / "back.tar"
    run("tar", "-cSf", str(back), "-C", str(memory_mount), ".")
    out = tmp_path / "out"
    out.mkdir()
    run("tar", "-xSf", str(back), "-C", str(out))
    run("diff", "-r", "--no-dereference", "-x", "fifo", "-x", "null", str(source), str(out))
    # The sparse file stayed sparse on the way in.
    assert os.stat(memory_mount / "sparse").st_blocks * 512 < 1 << 20


def test_mv_ln_and_nlink(memory_mount: Path) -> None:
    a = memory_mount / "a"
    a.write_text("data")
    run("ln", str(a), str(memory_mount / "b"))
    run("ln", "-s", "a", str(memory_mount / "s"))
    assert os.stat(a).st_nlink == 2
    assert (memory_mount / "s").read_text() == "data"
    (memory_mount / "d1" / "d2").mkdir(parents=True)
    run("mv", str(memory_mount / "b"), str(memory_mount / "d1" / "d2" / "b2"))
    assert os.stat(memory_mount / "d1" / "d2" / "b2").st_ino == os.stat(a).st_ino
    run("mv", str(memory_mount / "d1"), str(memory_mount / "moved"))
    assert (memory_mount / "moved" / "d2" / "b2").read_text() == "data"
    os.unlink(memory_mount / "moved" / "d2" / "b2")
    assert os.stat(a).st_nlink == 1
    assert os.stat(memory_mount).st_nlink == 3  # ".", "..", and "moved"'s ".."


def test_compileall(memory_mount: Path) -> None:
    package = memory_mount / "pkg"
    package.mkdir()
    for index in range(20):
        (package / f"mod{index}.py").write_text(
            f"VALUE = {index}\ndef f():\n    return VALUE * 2\n"
        )
    run(sys.executable, "-m", "compileall", "-q", str(package))
    cached = list((package / "__pycache__").iterdir())
    assert len(cached) == 20
    out = run(sys.executable, "-c", "import mod7; print(mod7.f())", cwd=package)
    assert out.strip() == "14"


def test_appends_from_two_descriptors(memory_mount: Path) -> None:
    path = memory_mount / "log"
    with open(path, "ab", buffering=0) as one, open(path, "ab", buffering=0) as two:
        for index in range(100):
            (one if index % 2 else two).write(b"%03d\n" % index)
    lines = path.read_bytes().split(b"\n")[:-1]
    assert sorted(lines) == [b"%03d" % i for i in range(100)]


def test_sparse_writes_and_seek_data_hole(memory_mount: Path) -> None:
    path = memory_mount / "sparse"
    with open(path, "wb") as f:
        f.write(b"head")
        f.seek(1 << 30)
        f.write(b"tail")
    st = os.stat(path)
    assert st.st_size == (1 << 30) + 4
    assert st.st_blocks * 512 < 2 << 20
    fd = os.open(path, os.O_RDONLY)
    try:
        assert os.pread(fd, 8, 1 << 29) == bytes(8)
        assert os.pread(fd, 8, 1 << 30) == b"tail"
        hole = os.lseek(fd, 0, os.SEEK_HOLE)
        assert 4 <= hole < 1 << 30
        data = os.lseek(fd, hole, os.SEEK_DATA)
        assert hole < data <= 1 << 30
        with pytest.raises(OSError) as exc:
            os.lseek(fd, st.st_size + 10, os.SEEK_DATA)
        assert exc.value.errno == errno.ENXIO
    finally:
        os.close(fd)
    run("fallocate", "--punch-hole", "--offset", "0", "--length", "4096", str(path))
    assert path.read_bytes()[:4] == bytes(4)


def test_xattrs_with_setfattr_getfattr(memory_mount: Path) -> None:
    path = memory_mount / "x"
    path.touch()
    run("setfattr", "-n", "user.colour", "-v", "blue", str(path))
    run("setfattr", "-n", "user.empty", str(path))
    out = run("getfattr", "-d", "--absolute-names", str(path))
    assert 'user.colour="blue"' in out
    assert os.getxattr(path, "user.colour") == b"blue"
    assert sorted(os.listxattr(path)) == ["user.colour", "user.empty"]
    with pytest.raises(OSError) as exc:
        os.setxattr(path, "user.colour", b"red", os.XATTR_CREATE)
    assert exc.value.errno == errno.EEXIST
    os.removexattr(path, "user.colour")
    with pytest.raises(OSError) as exc:
        os.getxattr(path, "user.colour")
    assert exc.value.errno == errno.ENODATA
    big = os.urandom(60_000)
    os.setxattr(path, "user.big", big)
    assert os.getxattr(path, "user.big") == big


def test_rename_flags(memory_mount: Path) -> None:
    a, b = memory_mount / "a", memory_mount / "b"
    a.write_text("A")
    b.write_text("B")
    with pytest.raises(OSError) as exc:
        renameat2(a, b, RENAME_NOREPLACE)
    assert exc.value.errno == errno.EEXIST
    renameat2(a, b, RENAME_EXCHANGE)
    assert (a.read_text(), b.read_text()) == ("B", "A")
    (memory_mount / "dir").mkdir()
    renameat2(a, memory_mount / "dir", RENAME_EXCHANGE)  # a file and a directory swap
    assert (memory_mount / "a").is_dir()
    assert (memory_mount / "dir").read_text() == "B"
    renameat2(b, memory_mount / "c", RENAME_NOREPLACE)
    assert (memory_mount / "c").read_text() == "A"


def test_concurrent_writers(memory_mount: Path) -> None:
    shared = memory_mount / "shared"
    block = 256 * 1024
    shared.write_bytes(b"")
    errors: list[BaseException] = []

    def writer(index: int) -> None:
        try:
            payload = bytes([index]) * block
            own = memory_mount / f"own{index}"
            with open(own, "wb") as f:
                for _ in range(16):
                    f.write(payload)
            fd = os.open(shared, os.O_WRONLY)
            try:
                for round_ in range(8):
                    os.pwrite(fd, payload, (round_ * 8 + index) * block)
            finally:
                os.close(fd)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    data = shared.read_bytes()
    assert len(data) == 64 * block
    for chunk in range(64):
        assert data[chunk * block : (chunk + 1) * block] == bytes([chunk % 8]) * block
    for index in range(8):
        digest = hashlib.sha256((memory_mount / f"own{index}").read_bytes()).hexdigest()
        assert digest == hashlib.sha256(bytes([index]) * block * 16).hexdigest()


def test_large_file_round_trip(memory_mount: Path) -> None:
    payload = os.urandom(1 << 20) * 48  # 48 MiB in 1 MiB writes
    path = memory_mount / "big"
    with open(path, "wb") as f:
        for offset in range(0, len(payload), 1 << 20):
            f.write(payload[offset : offset + (1 << 20)])
    with open(path, "rb") as f:
        assert hashlib.sha256(f.read()).digest() == hashlib.sha256(payload).digest()


def test_unlinked_open_file_stays_usable(memory_mount: Path) -> None:
    path = memory_mount / "tmp"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.unlink(path)
        os.write(fd, b"still here")
        assert os.pread(fd, 100, 0) == b"still here"
        assert os.fstat(fd).st_size == 10
        assert not path.exists()
    finally:
        os.close(fd)


def test_truncate_chmod_chown_utimens(memory_mount: Path) -> None:
    path = memory_mount / "f"
    path.write_bytes(b"x" * 5000)
    os.truncate(path, 100)
    assert path.read_bytes() == b"x" * 100
    os.truncate(path, 200)
    assert path.read_bytes() == b"x" * 100 + bytes(100)
    os.chmod(path, 0o4751)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o4751
    os.chown(path, 1234, 5678)
    st = os.stat(path)
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    os.utime(path, ns=(123_456_789_012_345_678, 987_654_321_123_456_789))
    st = os.stat(path)
    assert (st.st_atime_ns, st.st_mtime_ns) == (123_456_789_012_345_678, 987_654_321_123_456_789)
    before = time.time_ns()
    os.utime(path)  # UTIME_NOW
    assert os.stat(path).st_mtime_ns >= before - 10_000_000


def test_permissions_for_another_user(memory_mount: Path) -> None:
    os.chmod(memory_mount, 0o777)
    private = memory_mount / "private"
    private.write_text("secret")
    os.chmod(private, 0o600)
    run(
        "sh",
        "-c",
        f"umask 027; echo mine > {memory_mount}/mine; mkdir {memory_mount}/mydir",
        user=1000,
    )
    st = os.stat(memory_mount / "mine")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 1000, 0o640)
    assert stat.S_IMODE(os.stat(memory_mount / "mydir").st_mode) == 0o750
    denied = subprocess.run(
        ["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", "cat", str(private)],
        capture_output=True,
        text=True,
    )
    assert denied.returncode != 0 and "Permission denied" in denied.stderr
    # setgid directories hand their group down.
    shared = memory_mount / "shared"
    shared.mkdir()
    os.chown(shared, 0, 4321)
    os.chmod(shared, 0o2777)
    run("sh", "-c", f"touch {shared}/f; mkdir {shared}/d", user=1000)
    assert os.stat(shared / "f").st_gid == 4321
    assert os.stat(shared / "d").st_mode & stat.S_ISGID


def test_capacity_gives_enospc(tmp_path: Path) -> None:
    from tests.conftest import require_fuse
    from vfsframe.testing.mount import mounted_share, share_config

    require_fuse()
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    with mounted_share(mountpoint, share_config({"type": "memory", "capacity": "4MiB"})):
        vfs = os.statvfs(mountpoint)
        assert vfs.f_blocks * vfs.f_frsize == 4 << 20
        with pytest.raises(OSError) as exc, open(mountpoint / "big", "wb") as f:
            for _ in range(8):
                f.write(bytes(1 << 20))
                f.flush()
        assert exc.value.errno == errno.ENOSPC


def test_big_directory_listing_is_exact(memory_mount: Path) -> None:
    directory = memory_mount / "many"
    directory.mkdir()
    names = {f"file-{index:05d}-{'x' * (index % 50)}" for index in range(3000)}
    for name in names:
        (directory / name).touch()
    assert set(os.listdir(directory)) == names
    # Removing entries while a listing is in progress neither repeats nor loses survivors.
    seen = []
    with os.scandir(directory) as listing:
        for index, entry in enumerate(listing):
            seen.append(entry.name)
            if index == 10:
                for name in sorted(names)[-500:]:
                    os.unlink(directory / name)
    assert len(seen) == len(set(seen))
    assert set(sorted(names)[:-500]) <= set(seen)


def test_deep_paths_up_to_path_max(memory_mount: Path) -> None:
    component = "d" * 50
    fd = os.open(memory_mount, os.O_RDONLY | os.O_DIRECTORY)
    depth = 0
    try:
        while len(str(memory_mount)) + (depth + 1) * (len(component) + 1) < 4080:
            os.mkdir(component, dir_fd=fd)
            next_fd = os.open(component, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = next_fd
            depth += 1
        leaf = os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(leaf, b"deep")
        os.close(leaf)
    finally:
        os.close(fd)
    deep = str(memory_mount) + ("/" + component) * depth + "/leaf"
    assert len(deep) > 4000
    with open(deep, "rb") as f:
        assert f.read() == b"deep"


def test_posix_locks_between_processes(memory_mount: Path) -> None:
    path = memory_mount / "locked"
    path.write_text("x" * 100)
    with open(path, "r+") as f:
        fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 0)
        probe = (
            "import fcntl,sys\n"
            f"f=open({str(path)!r},'r+')\n"
            "try:\n fcntl.lockf(f, fcntl.LOCK_EX|fcntl.LOCK_NB, 10, 0); print('got')\n"
            "except OSError as e: print('busy', e.errno)\n"
            "fcntl.lockf(f, fcntl.LOCK_EX|fcntl.LOCK_NB, 10, 50); print('other range ok')\n"
        )
        out = run(sys.executable, "-c", probe)
        assert "busy" in out and "other range ok" in out
        fcntl.lockf(f, fcntl.LOCK_UN, 10, 0)
        assert "got" in run(sys.executable, "-c", probe)


def test_copy_file_range(memory_mount: Path) -> None:
    source, target = memory_mount / "src", memory_mount / "dst"
    payload = os.urandom(3 << 20)
    source.write_bytes(payload)
    with open(source, "rb") as fin, open(target, "wb") as fout:
        copied = 0
        while copied < len(payload):
            n = os.copy_file_range(fin.fileno(), fout.fileno(), len(payload) - copied)
            assert n > 0
            copied += n
    assert target.read_bytes() == payload


def test_remount_keeps_backend_state(tmp_path: Path) -> None:
    from tests.conftest import require_fuse
    from vfsframe.runtime import build_chain
    from vfsframe.testing.mount import mounted, share_config

    require_fuse()
    share = share_config({"type": "memory"})
    chain = build_chain(share.backend)
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    with mounted(mountpoint, chain):
        (mountpoint / "kept").write_text("across mounts")
        (mountpoint / "dir").mkdir()
    assert not (mountpoint / "kept").exists()
    with mounted(mountpoint, chain):
        assert (mountpoint / "kept").read_text() == "across mounts"
        assert (mountpoint / "dir").is_dir()


def test_killed_lock_waiter_is_released(memory_mount: Path) -> None:
    """SIGKILL of a process blocked in SETLKW: the kernel interrupts the request and the
    waiter exits, while other requests keep being served."""
    path = memory_mount / "lockfile"
    path.write_text("x")
    waiter_code = f"import fcntl; f = open({str(path)!r}, 'r+'); print('waiting', flush=True); fcntl.lockf(f, fcntl.LOCK_EX)"
    with open(path, "r+") as holder:
        fcntl.lockf(holder, fcntl.LOCK_EX)
        waiters = [
            subprocess.Popen([sys.executable, "-c", waiter_code], stdout=subprocess.PIPE, text=True)
            for _ in range(6)  # more waiters than the transport starts workers with
        ]
        for waiter in waiters:
            assert waiter.stdout is not None and waiter.stdout.readline().strip() == "waiting"
        time.sleep(0.3)
        assert all(waiter.poll() is None for waiter in waiters)  # really blocked
        (memory_mount / "still-served").write_text("yes")  # the mount is not starved
        for waiter in waiters:
            waiter.kill()
        for waiter in waiters:
            assert waiter.wait(timeout=10) == -signal.SIGKILL
        fcntl.lockf(holder, fcntl.LOCK_UN)
    with open(path, "r+") as again:
        fcntl.lockf(again, fcntl.LOCK_EX | fcntl.LOCK_NB)  # nobody holds it any more
