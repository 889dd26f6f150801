"""`vfsframe stats CONFIG`: fetch and summarise the metrics endpoint of a config's share(s)."""

from __future__ import annotations

import argparse
import math
import urllib.error
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from vfsframe.cli.common import CommandError, load_or_report


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "stats",
        help="show the metrics of running shares",
        description="Fetch the Prometheus endpoint of each share's `metrics` middleware (as "
        "CONFIG declares it) and print per-operation counts, errors and latencies.",
    )
    parser.add_argument("config", help="config file or builtin:NAME")
    parser.add_argument("--share", metavar="TAG", help="only the share with this tag")
    parser.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait for each endpoint"
    )
    parser.add_argument("--raw", action="store_true", help="print the endpoint's text as it is")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    shares = [s for s in config.shares if args.share is None or s.tag == args.share]
    if not shares:
        tags = ", ".join(s.tag for s in config.shares)
        raise SystemExit(f"vfsframe stats: no share tagged {args.share!r}; the config has: {tags}")
    status = 0
    for share in shares:
        try:
            url = metrics_url(share)
            text = fetch(url, args.timeout)
        except CommandError as exc:
            print(f"share {share.tag!r}: {exc}")
            status = max(status, exc.code)
            continue
        print(f"share {share.tag!r} ({url})")
        print(text if args.raw else format_stats(text))
    return status


def metrics_url(share: Any) -> str:
    listens = [m.listen for m in share.middleware if m.type == "metrics"]
    if not listens:
        raise CommandError("no metrics middleware in this share", 2)
    listen = listens[0]
    if listen is None:
        raise CommandError("its metrics middleware has no `listen` endpoint", 2)
    host, _, port = listen.rpartition(":")
    if port == "0":
        raise CommandError(f"listen = {listen!r} picks a port at start; name a fixed port", 2)
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host in ("::", "[::]"):
        host = "[::1]"
    return f"http://{host}:{port}/metrics"


def fetch(url: str, timeout: float) -> str:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CommandError(f"cannot fetch {url}: {reason} (is the share being served?)") from None


def format_stats(text: str) -> str:
    """A table per operation, then bytes and errors, from Prometheus text format."""
    counts: dict[str, float] = {}
    buckets: dict[str, list[tuple[float, float]]] = {}
    sums: dict[str, float] = {}
    errors: dict[tuple[str, str], float] = {}
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, sample.value
            if name == "vfsframe_operations_total":
                counts[labels["op"]] = value
            elif name == "vfsframe_operation_seconds_bucket":
                buckets.setdefault(labels["op"], []).append((float(labels["le"]), value))
            elif name == "vfsframe_operation_seconds_sum":
                sums[labels["op"]] = value
            elif name == "vfsframe_errors_total":
                errors[(labels["op"], labels["errno"])] = value
            elif name in ("vfsframe_read_bytes_total", "vfsframe_written_bytes_total"):
                totals[name] = value
    errors_by_op: dict[str, float] = {}
    for (op, _), value in errors.items():
        errors_by_op[op] = errors_by_op.get(op, 0) + value
    lines = [
        f"  {'operation':<16}{'count':>10}{'errors':>8}{'mean ms':>10}{'p50 ms':>10}{'p99 ms':>10}"
    ]
    for op, count in sorted(counts.items(), key=lambda item: -item[1]):
        if not count:
            continue
        mean = sums.get(op, 0.0) / count * 1000
        p50 = _quantile(buckets.get(op, []), count, 0.50)
        p99 = _quantile(buckets.get(op, []), count, 0.99)
        lines.append(
            f"  {op:<16}{int(count):>10}{int(errors_by_op.get(op, 0)):>8}"
            f"{mean:>10.3f}{_ms(p50):>10}{_ms(p99):>10}"
        )
    if len(lines) == 1:
        lines.append("  (no operations yet)")
    lines.append(
        f"  bytes read {_size(totals.get('vfsframe_read_bytes_total', 0))}, "
        f"written {_size(totals.get('vfsframe_written_bytes_total', 0))}"
    )
    if errors:
        shown = ", ".join(
            f"{op} {name}: {int(value)}" for (op, name), value in sorted(errors.items()) if value
        )
        lines.append(f"  errors: {shown}")
    return "\n".join(lines)


def _quantile(buckets: list[tuple[float, float]], count: float, q: float) -> float:
    """Upper bound of the histogram bucket holding the q-quantile (Prometheus buckets are
    cumulative)."""
    rank = q * count
    for bound, cumulative in sorted(buckets):
        if cumulative >= rank:
            return bound
    return math.inf


def _ms(seconds: float) -> str:
    return "inf" if math.isinf(seconds) else f"≤{seconds * 1000:g}"


def _size(value: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value} B"
