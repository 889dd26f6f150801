"""The HTTP endpoint of one metrics registry: GET /metrics in Prometheus text format.

prometheus_client's ``start_http_server`` runs ``serve_forever`` with its default half-second
poll, so stopping it (every chain close, every test) took up to 0.5 s. This one polls every
POLL_SECONDS and stops as soon as ``close`` is called.
"""

from __future__ import annotations

import socket
import socketserver
import threading
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CollectorRegistry, make_wsgi_app

# How often the serving loop looks for a stop request: close() waits at most this long.
POLL_SECONDS = 0.02
JOIN_SECONDS = 5.0


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged (one line per scrape on stderr otherwise)."""


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a scrape in progress does not hold up close()


class MetricsEndpoint:
    """Serves ``registry`` on ``host``:``port`` from a thread of its own, from ``start`` until
    ``close``. The socket is bound at once, so a port in use is an error at build time."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry) -> None:
        server_class = type("_Server", (_Server,), {"address_family": _family(host, port)})
        self._server: WSGIServer = server_class((host, port), _QuietHandler)
        self._server.set_app(make_wsgi_app(registry))
        self.address: tuple[str, int] = self._server.server_address[:2]  # type: ignore[assignment]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": POLL_SECONDS},
            name=f"metrics-{self.address[1]}",
            daemon=True,
        )

    def start(self) -> None:
        if self._thread.ident is None:  # not started yet
            self._thread.start()

    def close(self) -> None:
        started = self._thread.ident is not None
        if started:
            self._server.shutdown()  # returns once the loop has seen the request
        self._server.server_close()
        if started:
            self._thread.join(JOIN_SECONDS)


def _family(host: str, port: int) -> socket.AddressFamily:
    """IPv6 for an IPv6 address or a name that only has one, else IPv4."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    return infos[0][0]
