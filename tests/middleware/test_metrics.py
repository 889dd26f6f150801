"""metrics in-process: counters, histograms, bytes and errors, and the HTTP endpoint."""

from __future__ import annotations

import errno
import threading
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError
from vfsframe_plugins.metrics import MetricsConfig, MetricsMiddleware

from .helpers import Fs, memory_chain, raises_errno


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_counts_latency_bytes_and_errors() -> None:
    metrics = MetricsMiddleware(MetricsConfig(listen=None))
    fs = Fs(memory_chain([metrics]))
    fs.put("/f", b"x" * 1000)
    assert fs.get("/f") == b"x" * 1000
    for _ in range(3):
        with raises_errno(errno.ENOENT):
            fs.stat("/missing")
    values = samples(metrics.exposition().decode())
    assert values[("vfsframe_operations_total", (("op", "write"),))] == 1
    assert values[("vfsframe_operations_total", (("op", "getattr"),))] == 3
    assert values[("vfsframe_operation_seconds_count", (("op", "read"),))] == 1
    assert values[("vfsframe_operation_seconds_bucket", (("le", "+Inf"), ("op", "read")))] == 1
    assert values[("vfsframe_written_bytes_total", ())] == 1000
    assert values[("vfsframe_read_bytes_total", ())] == 1000
    assert values[("vfsframe_errors_total", (("errno", "ENOENT"), ("op", "getattr")))] == 3


def test_http_endpoint_and_separate_registries() -> None:
    first = MetricsMiddleware(MetricsConfig(listen="127.0.0.1:0"))
    second = MetricsMiddleware(MetricsConfig(listen="127.0.0.1:0"))
    try:
        first.start()
        second.start()
        Fs(memory_chain([first])).mkdir("/d")
        for middleware, expected in ((first, 1.0), (second, None)):
            assert middleware.address is not None
            host, port = middleware.address
            with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as answer:
                values = samples(answer.read().decode())
            assert values.get(("vfsframe_operations_total", (("op", "mkdir"),))) == (
                expected or 0.0
            )
    finally:
        first.close()
        second.close()


def test_a_port_in_use_says_what_to_do() -> None:
    first = MetricsMiddleware(MetricsConfig(listen="127.0.0.1:0"))
    try:
        assert first.address is not None
        with pytest.raises(OSError, match="its own `listen` port"):
            MetricsMiddleware(MetricsConfig(listen=f"127.0.0.1:{first.address[1]}"))
    finally:
        first.close()


@pytest.mark.parametrize("listen", ["9100", "host:port", "127.0.0.1:70000", ":80"])
def test_bad_listen(listen: str) -> None:
    with pytest.raises(ValidationError) as info:
        MetricsConfig(listen=listen)
    assert info.value.errors()[0]["loc"] == ("listen",)


def test_close_stops_the_endpoint_promptly() -> None:
    """A chain close (every unmount, every test) waited up to half a second for the server's
    poll; now close() returns within a few polls and the port is free again."""
    metrics = MetricsMiddleware(MetricsConfig(listen="127.0.0.1:0"))
    metrics.start()
    assert metrics.address is not None
    host, port = metrics.address
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as answer:
        assert b"vfsframe_operations" in answer.read()
    start = time.perf_counter()
    metrics.close()
    took = time.perf_counter() - start
    assert took < 0.25, f"close took {took:.3f} s"
    again = MetricsMiddleware(MetricsConfig(listen=f"127.0.0.1:{port}"))  # the port is free
    again.close()


def test_no_thread_before_start_and_close_without_start() -> None:
    """The listener's thread starts with serving (after the sandbox drops capabilities, which
    are per thread), not when the chain is built; the port is bound at once all the same."""
    before = set(threading.enumerate())
    metrics = MetricsMiddleware(MetricsConfig(listen="127.0.0.1:0"))
    assert set(threading.enumerate()) == before
    assert metrics.address is not None
    start = time.perf_counter()
    metrics.close()  # never started: nothing to shut down, and no wait for a loop
    assert time.perf_counter() - start < 0.25
