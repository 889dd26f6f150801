"""The `log` middleware: one line per operation, text or JSON Lines."""

from __future__ import annotations

import errno
import json
import sys
import threading
import time
from collections.abc import Generator
from typing import IO, Any

from vfsframe.plugin import Middleware
from vfsframe_plugins._opclasses import OPERATION, install_wrappers

from .config import LogConfig

# Operations whose result is a byte count worth logging (never the bytes themselves).
_COUNTED = frozenset({"read", "write", "copy_file_range"})


class LogMiddleware(Middleware):
    """Times each operation around the rest of the chain and writes one line about it."""

    def __init__(self, config: LogConfig) -> None:
        self.config = config
        self.json = config.format == "json"
        self.slow_ns = None if config.slow_ms is None else int(config.slow_ms * 1e6)
        wanted = set(config.ops) if config.ops is not None else None
        self.logged = frozenset(
            op
            for op, row in OPERATION.items()
            if wanted is None or op in wanted or row.op_class in wanted
        )
        self._file: IO[str] | None = None
        if config.path is not None:
            self._file = open(config.path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
        self._lock = threading.Lock()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def record(self, op: str, req: Any, result: Any, code: int, elapsed_ns: int) -> None:
        if self.slow_ns is not None and elapsed_ns < self.slow_ns:
            return
        fields: dict[str, Any] = {}
        for name, _ in OPERATION[op].paths:
            fields[name] = getattr(req, name)
        ctx = req.ctx
        if self.json:
            entry: dict[str, Any] = {
                "time": _timestamp(),
                "op": op,
                **fields,
                "uid": ctx.uid,
                "gid": ctx.gid,
                "pid": ctx.pid,
                "result": "ok" if code == 0 else "error",
            }
            if code:
                entry["errno"] = errno.errorcode.get(code, str(code))
            elif op in _COUNTED:
                entry["bytes"] = _count(result)
            entry["ms"] = round(elapsed_ns / 1e6, 3)
            line = json.dumps(entry, ensure_ascii=False)
        else:
            where = " ".join(
                f"{value!r}" if name == "path" else f"{name}={value!r}"
                for name, value in fields.items()
            )
            if code:
                outcome = errno.errorcode.get(code, str(code))
            elif op in _COUNTED:
                outcome = f"ok bytes={_count(result)}"
            else:
                outcome = "ok"
            line = (
                f"{_timestamp()} {op} {where} uid={ctx.uid} gid={ctx.gid} pid={ctx.pid} "
                f"{outcome} {elapsed_ns / 1e6:.3f}ms".replace("  ", " ")
            )
        stream = self._file if self._file is not None else sys.stderr
        with self._lock:
            stream.write(line + "\n")


# The last whole second formatted, and its text: one tuple, replaced whole, so a thread
# never pairs one second with another's text.
_second: tuple[int, str] = (-1, "")


def _timestamp() -> str:
    """ISO 8601 UTC with microseconds; the date is formatted once per second."""
    global _second
    now = time.time()
    second = int(now)
    cached = _second
    if cached[0] != second:
        cached = _second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{cached[1]}.{int((now - second) * 1e6):06d}Z"


def _count(result: Any) -> int:
    return result if isinstance(result, int) else len(result)


def _logging_wrapper(op: str) -> Any:
    def wrapper(self: LogMiddleware, req: Any) -> Generator[None, Any, Any]:
        if op not in self.logged:
            return (yield)
        start = time.perf_counter_ns()
        try:
            result = yield
        except OSError as exc:
            self.record(op, req, None, exc.errno or errno.EIO, time.perf_counter_ns() - start)
            raise
        except Exception:
            self.record(op, req, None, errno.EIO, time.perf_counter_ns() - start)
            raise
        self.record(op, req, result, 0, time.perf_counter_ns() - start)
        return result

    return wrapper


install_wrappers(LogMiddleware, _logging_wrapper)
