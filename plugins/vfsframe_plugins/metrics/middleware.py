"""The `metrics` middleware: Prometheus counters and histograms in a registry of its own."""

from __future__ import annotations

import errno
import time
from collections.abc import Generator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from vfsframe.hookspecs import OPERATIONS
from vfsframe.plugin import Middleware
from vfsframe_plugins._opclasses import install_wrappers

from .config import MetricsConfig, split_listen
from .endpoint import MetricsEndpoint


class MetricsMiddleware(Middleware):
    """Counts and times every operation around the rest of the chain.

    Each instance has its own ``CollectorRegistry``: two shares in one server never share
    (or clash on) a metric, and each serves its own endpoint.
    """

    def __init__(self, config: MetricsConfig) -> None:
        self.config = config
        self.registry = CollectorRegistry(auto_describe=True)
        self.operations = Counter(
            "vfsframe_operations", "Operations answered, by op", ["op"], registry=self.registry
        )
        self.latency = Histogram(
            "vfsframe_operation_seconds",
            "Time an operation spent in this middleware and everything beneath it",
            ["op"],
            buckets=config.buckets,
            registry=self.registry,
        )
        self.errors = Counter(
            "vfsframe_errors",
            "Operations that failed, by op and errno name",
            ["op", "errno"],
            registry=self.registry,
        )
        self.read_bytes = Counter(
            "vfsframe_read_bytes", "Bytes returned by read", registry=self.registry
        )
        self.written_bytes = Counter(
            "vfsframe_written_bytes",
            "Bytes accepted by write and copy_file_range",
            registry=self.registry,
        )
        # Label lookups cost more than the increments: resolve each op's children once.
        self.children = {
            op: (self.operations.labels(op), self.latency.labels(op)) for op in OPERATIONS
        }
        self._endpoint: MetricsEndpoint | None = None
        self.address: tuple[str, int] | None = None
        if config.listen is not None:
            self._serve(config.listen)

    def _serve(self, listen: str) -> None:
        host, port = split_listen(listen)
        try:
            self._endpoint = MetricsEndpoint(host, port, self.registry)
        except OSError as exc:
            raise OSError(
                exc.errno,
                f"metrics: cannot listen on {listen}: {exc.strerror}; give each share's "
                "metrics its own `listen` port",
            ) from None
        self.address = self._endpoint.address

    def exposition(self) -> bytes:
        """The Prometheus text format of this registry (what GET /metrics answers)."""
        return generate_latest(self.registry)

    def start(self) -> None:
        if self._endpoint is not None:
            self._endpoint.start()

    def close(self) -> None:
        if self._endpoint is not None:
            self._endpoint.close()
            self._endpoint = None

    def observe(self, op: str, result: Any, code: int, seconds: float) -> None:
        count, latency = self.children[op]
        count.inc()
        latency.observe(seconds)
        if code:
            self.errors.labels(op, errno.errorcode.get(code, str(code))).inc()
        elif op == "read":
            self.read_bytes.inc(result if isinstance(result, int) else len(result))
        elif op in ("write", "copy_file_range"):
            self.written_bytes.inc(result)


def _measuring_wrapper(op: str) -> Any:
    def wrapper(self: MetricsMiddleware, req: Any) -> Generator[None, Any, Any]:
        start = time.perf_counter()
        try:
            result = yield
        except OSError as exc:
            self.observe(op, None, exc.errno or errno.EIO, time.perf_counter() - start)
            raise
        except Exception:
            self.observe(op, None, errno.EIO, time.perf_counter() - start)
            raise
        self.observe(op, result, 0, time.perf_counter() - start)
        return result

    return wrapper


install_wrappers(MetricsMiddleware, _measuring_wrapper)
