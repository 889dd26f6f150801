"""The vhost-user listener: a Unix socket per share, one front-end connection at a time.

When a front-end goes away (guest shut down, QEMU killed), its device is reset and the
listener waits for the next one; the process keeps running.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import stat
import threading
from pathlib import Path

from vfsframe.virtio.device import VhostUserFsDevice

log = logging.getLogger(__name__)


def _remove_stale_socket(path: Path) -> None:
    """Remove a socket file nobody listens on (left by a killed server); refuse anything
    else, so a typo in the config cannot delete a user's file."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise FileExistsError(f"{path} exists and is not a socket; choose another socket path")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()
        return
    finally:
        probe.close()
    raise FileExistsError(f"{path}: another server is listening on this socket")


class VhostUserServer:
    """Accepts front-end connections for one device and serves them one after another."""

    def __init__(
        self,
        device: VhostUserFsDevice,
        socket_path: str | Path | None = None,
        fd: int | None = None,
        name: str = "vfsframe",
    ) -> None:
        if (socket_path is None) == (fd is None):
            raise ValueError("give exactly one of socket_path and fd")
        self.device = device
        self.name = name
        self.socket_path = Path(socket_path) if socket_path is not None else None
        self.connections = 0
        self._fd = fd
        self._sock: socket.socket | None = None
        self._conn: socket.socket | None = None
        self._wake = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def open(self) -> None:
        """Create (or adopt) the socket. Separate from start() so errors surface early."""
        if self.socket_path is not None:
            _remove_stale_socket(self.socket_path)
            self.socket_path.parent.mkdir(parents=True, exist_ok=True)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(str(self.socket_path))
            sock.listen(1)
        else:
            assert self._fd is not None
            sock = socket.socket(fileno=self._fd)
        self._sock = sock

    def start(self) -> None:
        if self._sock is None:
            self.open()
        self._thread = threading.Thread(
            target=self.serve_forever, name=f"{self.name}-listen", daemon=True
        )
        self._thread.start()

    @property
    def running(self) -> bool:
        """Still serving or waiting for a front-end (false once a --fd connection ended)."""
        return self._thread is not None and self._thread.is_alive()

    def serve_forever(self) -> None:
        sock = self._sock
        assert sock is not None
        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        if not listening:  # --fd gave us an already-connected front-end: serve it once
            self._serve(sock, "inherited fd")
            return
        where = str(self.socket_path) if self.socket_path else f"fd {self._fd}"
        log.info("%s: listening on %s", self.name, where)
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        poller.register(self._wake, select.POLLIN)
        while not self._stopping.is_set():
            events = dict(poller.poll())
            if self._wake in events or self._stopping.is_set():
                break
            try:
                conn, _ = sock.accept()
            except OSError as exc:
                log.warning("%s: accept failed: %s", self.name, exc)
                continue
            self._serve(conn, "front-end")

    def _serve(self, conn: socket.socket, who: str) -> None:
        with self._lock:
            if self._stopping.is_set():
                conn.close()
                return
            self._conn = conn
        self.connections += 1
        log.info("%s: %s connected (connection %d)", self.name, who, self.connections)
        try:
            self.device.serve(conn)
        finally:
            with self._lock:
                self._conn = None
            conn.close()
        served = ", ".join(f"q{i}={n}" for i, n in enumerate(self.device.served))
        log.info("%s: %s disconnected; device reset (requests served: %s)", self.name, who, served)

    def stop(self) -> None:
        """Stop accepting, drop the current front-end, remove the socket file."""
        self._stopping.set()
        os.eventfd_write(self._wake, 1)
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(OSError):
                    self._conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self.socket_path is not None:
            try:
                self.socket_path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                # Inside a sandbox the path may lie on its read-only root (EROFS): the
                # sandbox removes the socket through the directory fd it kept (leave()).
                log.debug("%s: socket %s left to the sandbox: %s", self.name, self.socket_path, exc)
        os.close(self._wake)
