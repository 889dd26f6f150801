"""`restart` gives either kind of server process a fresh process on the same sockets: a guest
boot that panicked before init is retried against it (the C virtiofsd exits with its
front-end). Plain processes here, no guest."""

from __future__ import annotations

from pathlib import Path

from tests.guest.servers import SERVE, VfsframeMemory, restart
from tests.usecases.two_guests import ServerProcess


def _restarted(server: VfsframeMemory | ServerProcess) -> None:
    server.start()
    try:
        first = server.proc
        assert first is not None and first.poll() is None
        restart(server)
        assert first.poll() is not None, "the old process is still running"
        assert server.proc is not first and server.proc.poll() is None
        assert all(sock.is_socket() for sock in server.sockets)
    finally:
        server.stop()


def test_restart_a_guest_test_server(tmp_path: Path) -> None:
    _restarted(VfsframeMemory(tmp_path))


def test_restart_a_two_guest_server_process(tmp_path: Path) -> None:
    config = tmp_path / "one.toml"
    sockets = [tmp_path / "a.sock", tmp_path / "b.sock"]
    config.write_text("".join(
        f'[[share]]\ntag = "{sock.stem}"\nsocket = "{sock}"\n[share.backend]\ntype = "memory"\n'
        for sock in sockets
    ))  # fmt: skip
    _restarted(ServerProcess("one", [*SERVE, "serve", str(config)], sockets, tmp_path / "log"))
