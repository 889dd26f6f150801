"""The /dev/fuse transport: mount a share through the host kernel's FUSE client.

Worker threads read requests from the /dev/fuse descriptor into preallocated buffers, hand
them to the session and write the replies back. Nothing here knows about filesystems.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import logging
import os
import shutil
import socket
import stat
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from vfsframe.fuse import abi
from vfsframe.session import FuseSession

log = logging.getLogger(__name__)

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MNT_DETACH = 2
# Sequential READs the kernel may have in flight ahead of a reader (see _raise_readahead).
READAHEAD_REQUESTS = 2

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


class MountError(Exception):
    """The share could not be mounted; the message says what to do about it."""


@dataclass
class MountOptions:
    """Mount options in the form FUSE users type them: ``-o allow_other,ro,debug``."""

    allow_other: bool = False
    default_permissions: bool = False
    ro: bool = False
    debug: bool = False
    fsname: str = "vfsframe"
    subtype: str = "vfsframe"
    workers: int = 4  # started at mount; more are added while all are busy
    max_workers: int = 64
    # Options passed to the kernel untouched (e.g. max_read=...).
    extra: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str | None) -> MountOptions:
        options = cls()
        for item in filter(None, (text or "").split(",")):
            key, _, value = item.partition("=")
            if key in ("allow_other", "default_permissions", "ro", "debug"):
                if value:
                    raise ValueError(f"mount option {key!r} takes no value")
                setattr(options, key, True)
            elif key == "rw":
                options.ro = False
            elif key in ("fsname", "subtype"):
                setattr(options, key, value)
            elif key in ("workers", "max_workers"):
                setattr(options, key, int(value))
                if int(value) < 1:
                    raise ValueError(f"{key} must be at least 1")
            elif key in ("max_read", "blksize"):
                options.extra.append(item)
            else:
                raise ValueError(f"unknown mount option {key!r}")
        return options


def check_mountpoint(path: str) -> None:
    """Refuse a mountpoint that cannot work, saying why."""
    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            raise MountError(
                f"{path} is a stale FUSE mount (its server is gone); "
                f"unmount it first: umount -l {path}"
            ) from None
        raise MountError(f"mountpoint {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise MountError(f"mountpoint {path} is not a directory")


class DevFuseMount:
    """One kernel mount of one session."""

    def __init__(self, session: FuseSession, mountpoint: str, options: MountOptions) -> None:
        self.session = session
        self.mountpoint = os.path.abspath(mountpoint)
        self.options = options
        self.fd = -1
        self._via_fusermount = False
        self._threads: list[threading.Thread] = []
        self._pool_lock = threading.Lock()
        self._idle = 0
        self._unmounted = threading.Event()
        self.connection: int | None = None
        self._readahead_pending = True

    # -- mounting --------------------------------------------------------------------------

    def mount(self) -> None:
        check_mountpoint(self.mountpoint)
        if os.geteuid() == 0:
            self._mount_syscall()
        else:
            self._mount_fusermount()
        self.connection = _fuse_connection(self.mountpoint)
        log.info("mounted %s on %s", self.options.fsname, self.mountpoint)

    def _kernel_options(self) -> list[str]:
        opts = []
        if self.options.allow_other:
            opts.append("allow_other")
        if self.options.default_permissions:
            opts.append("default_permissions")
        return opts + self.options.extra

    def _mount_syscall(self) -> None:
        try:
            self.fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise MountError(
                f"cannot open /dev/fuse: {exc.strerror} (is the fuse module loaded?)"
            ) from None
        data = [
            f"fd={self.fd}",
            f"rootmode={stat.S_IFDIR:o}",
            f"user_id={os.getuid()}",
            f"group_id={os.getgid()}",
            *self._kernel_options(),
        ]
        flags = MS_NOSUID | MS_NODEV | (MS_RDONLY if self.options.ro else 0)
        fstype = f"fuse.{self.options.subtype}" if self.options.subtype else "fuse"
        result = _libc.mount(
            self.options.fsname.encode(),
            os.fsencode(self.mountpoint),
            fstype.encode(),
            flags,
            ",".join(data).encode(),
        )
        if result != 0:
            code = ctypes.get_errno()
            os.close(self.fd)
            self.fd = -1
            raise MountError(f"mount {self.mountpoint}: {os.strerror(code)}")

    def _mount_fusermount(self) -> None:
        helper = shutil.which("fusermount3") or shutil.which("fusermount")
        if helper is None:
            raise MountError("not root and no fusermount3 found: install the fuse3 package")
        opts = [f"fsname={self.options.fsname}", f"subtype={self.options.subtype}"]
        opts += self._kernel_options() + (["ro"] if self.options.ro else [])
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with ours, theirs:
            env = dict(os.environ, _FUSE_COMMFD=str(theirs.fileno()))
            done = subprocess.run(
                [helper, "-o", ",".join(opts), "--", self.mountpoint],
                env=env,
                pass_fds=[theirs.fileno()],
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                raise MountError(f"{helper} failed: {done.stderr.strip()}")
            _, fds, _, _ = socket.recv_fds(ours, 1, 1)
        if not fds:
            raise MountError(f"{helper} did not pass back the /dev/fuse descriptor")
        self.fd = fds[0]
        self._via_fusermount = True

    def _raise_readahead(self) -> None:
        """Let the kernel keep two max-size READs in flight ahead of a sequential reader.

        A new FUSE mount gets the default 128 KiB read-ahead, and INIT can only lower it; with
        1 MiB requests and two of them outstanding, one worker copies while another waits in
        the kernel (measured: 2.2-2.7 GB/s against 1.4 GB/s at the default). Called once the
        INIT reply has been written (the kernel applies INIT's limit then). Root only (sysfs)."""
        if self.connection is None or os.geteuid() != 0:
            return
        path = f"/sys/class/bdi/0:{self.connection}/read_ahead_kb"
        try:
            with open(path, "w") as setting:
                setting.write(str(READAHEAD_REQUESTS * self.session.options.max_readahead // 1024))
        except OSError as exc:
            log.debug("could not raise read-ahead (%s): %s", path, exc)

    # -- serving ---------------------------------------------------------------------------

    def start(self) -> None:
        """Serve requests on worker threads until the filesystem is unmounted."""
        for _ in range(self.options.workers):
            self._add_worker()

    def _add_worker(self) -> None:
        with self._pool_lock:
            thread = threading.Thread(
                target=self._worker, name=f"fuse-worker-{len(self._threads)}", daemon=True
            )
            self._threads.append(thread)
            self._idle += 1
        thread.start()

    def _took_request(self) -> None:
        """A worker is busy now; keep one idle worker reading, so a request that blocks
        (SETLKW) can never starve the one that would release it."""
        with self._pool_lock:
            self._idle -= 1
            grow = self._idle == 0 and len(self._threads) < self.options.max_workers
        if grow:
            self._add_worker()

    def _finished_request(self) -> None:
        with self._pool_lock:
            self._idle += 1

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the kernel to end the connection (unmount); True once it has."""
        return self._unmounted.wait(timeout)

    def _worker(self) -> None:
        request = bytearray(self.session.max_write + abi.REQUEST_OVERHEAD + 4096)
        reply = bytearray(self.session.max_write + abi.OUT_HEADER.size + 4096)
        request_view, reply_view = memoryview(request), memoryview(reply)
        reply_list: Sequence[memoryview] = [reply_view]
        debug = self.options.debug
        while True:
            try:
                size = os.readv(self.fd, [request])
            except OSError as exc:
                if exc.errno in (errno.EINTR, errno.EAGAIN, errno.ENOENT):
                    continue  # ENOENT: the request was interrupted before we read it
                if exc.errno not in (errno.ENODEV, errno.EBADF):
                    log.error("reading /dev/fuse failed: %s", exc)
                break
            self._took_request()
            if debug:
                _log_request(request_view)
            length = self.session.handle([request_view[:size]], reply_list)
            if length:
                if debug:
                    _log_reply(reply_view)
                self._write_reply(reply_view[:length])
            self._finished_request()
            if self._readahead_pending and self.session.initialized:
                self._readahead_pending = False
                self._raise_readahead()
        self.session.abort_waits()  # workers blocked in SETLKW: nobody waits for them now
        self._unmounted.set()

    def _write_reply(self, reply: memoryview) -> None:
        try:
            os.write(self.fd, reply)
        except OSError as exc:
            # ENOENT: the kernel gave up on the request (interrupted); ENODEV/EBADF: the
            # mount is going away. Nothing to do about either.
            if exc.errno not in (errno.ENOENT, errno.ENODEV, errno.EBADF):
                log.warning("writing a reply to /dev/fuse failed: %s", exc)

    # -- unmounting ------------------------------------------------------------------------

    def unmount(self) -> None:
        """Detach the mount; the workers see the end of the connection and stop."""
        if self._unmounted.is_set():
            return
        if self._via_fusermount:
            helper = shutil.which("fusermount3") or shutil.which("fusermount") or "fusermount3"
            subprocess.run([helper, "-u", "-z", self.mountpoint], capture_output=True)
        elif _libc.umount2(os.fsencode(self.mountpoint), 0) != 0:
            code = ctypes.get_errno()
            if code == errno.EBUSY:
                log.warning("%s is busy; detaching it lazily", self.mountpoint)
                _libc.umount2(os.fsencode(self.mountpoint), MNT_DETACH)
            elif code != errno.EINVAL:  # EINVAL: not mounted any more
                log.warning("unmounting %s: %s", self.mountpoint, os.strerror(code))
        if not self._unmounted.wait(2.0):
            # A lazily detached mount lives until its last user goes; we are stopping now.
            self._abort_connection()
            self._unmounted.wait(2.0)
        self._close_fd()

    def _abort_connection(self) -> None:
        if self.connection is None:
            return
        try:
            with open(f"/sys/fs/fuse/connections/{self.connection}/abort", "w") as abort:
                abort.write("1")
        except OSError as exc:
            log.warning("could not abort FUSE connection %s: %s", self.connection, exc)

    def _close_fd(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            with contextlib.suppress(OSError):
                os.close(fd)


def _fuse_connection(mountpoint: str) -> int | None:
    """The fusectl connection number (the mount's device minor), read from mountinfo: a
    stat(2) of the mountpoint would wait for a server that is not serving yet."""
    found = None
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            fields = line.split()
            if fields[4] == mountpoint and fields[2].startswith("0:"):
                found = int(fields[2].split(":")[1])  # the last (topmost) mount wins
    return found


def _log_request(view: memoryview) -> None:
    length, opcode, unique, nodeid, uid, gid, pid, _, _ = abi.IN_HEADER.unpack_from(view)
    try:
        name = abi.Opcode(opcode).name
    except ValueError:
        name = str(opcode)
    log.debug(
        "-> %s unique=%d nodeid=%d len=%d uid=%d gid=%d pid=%d",
        name,
        unique,
        nodeid,
        length,
        uid,
        gid,
        pid,
    )


def _log_reply(view: memoryview) -> None:
    length, error, unique = abi.OUT_HEADER.unpack_from(view)
    log.debug("<- unique=%d len=%d error=%d", unique, length, error)
