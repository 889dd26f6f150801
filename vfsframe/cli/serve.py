"""`vfsframe serve CONFIG`: serve shares to QEMU guests over vhost-user (virtio-fs).

Follows the vhost-user backend program conventions (QEMU docs/interop/vhost-user.rst), so
libvirt and other managers can start it like virtiofsd: `--socket-path`, `--fd`,
`--print-capabilities`, and a clean exit on SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from vfsframe.chain import ShareChain
from vfsframe.cli.common import CommandError, choose_share, load_or_report
from vfsframe.runtime import build_guest_sessions
from vfsframe.sandbox import IdMapping, SandboxPlan, make_plan
from vfsframe.sandbox.enter import SandboxEntry
from vfsframe.virtio import VhostUserFsDevice, VhostUserServer

log = logging.getLogger("vfsframe.serve")

CAPABILITIES = {"type": "fs"}
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
DEFAULT_WORKERS = 64


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve shares to QEMU guests over vhost-user (virtio-fs)",
        description="Listen on every share's vhost-user socket (`socket` in CONFIG, or one "
        "per guest in `sockets`) and serve the guests that connect; a guest that goes away "
        "leaves its socket waiting for the next one. Stops on SIGINT/SIGTERM and removes its "
        "sockets. With --share, serve one share, optionally on --socket-path or an inherited "
        "--fd instead of the configured socket (the vhost-user backend conventions, as "
        "virtiofsd).",
    )
    parser.add_argument(
        "config", nargs="?", help="config file (.toml, .yaml, .json) or builtin:NAME"
    )
    parser.add_argument("--share", metavar="TAG", help="serve only this share")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--socket-path", metavar="PATH", help="vhost-user socket to listen on")
    where.add_argument(
        "--fd",
        type=int,
        metavar="FDNUM",
        help="inherited vhost-user socket (listening or connected)",
    )
    parser.add_argument(
        "--print-capabilities",
        action="store_true",
        help='print the vhost-user backend capabilities ({"type": "fs"}) and exit',
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=DEFAULT_WORKERS,
        metavar="N",
        help="most threads per request queue; a queue starts with one and adds more while "
        f"its threads are stuck on slow requests (default {DEFAULT_WORKERS})",
    )
    sandbox = parser.add_argument_group("sandbox (docs/security.md; default: the config's)")
    sandbox.add_argument(
        "--sandbox", choices=["namespace", "chroot", "none"], help="isolation once built"
    )
    sandbox.add_argument(
        "--seccomp", choices=["kill", "log", "none"], help="what a call off the allow-list does"
    )
    sandbox.add_argument(
        "--uid-map",
        action="append",
        metavar=":NS_UID:HOST_UID:COUNT:",
        help="user namespace uid mapping (repeatable); the server runs as the host uid of 0",
    )
    sandbox.add_argument(
        "--gid-map", action="append", metavar=":NS_GID:HOST_GID:COUNT:", help="gid mapping"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.print_capabilities:
        print(json.dumps(CAPABILITIES, indent=2))
        return 0
    if args.config is None:
        print("vfsframe serve: a CONFIG file is required", file=sys.stderr)
        return 2
    config = load_or_report(args.config)
    # Block the stop signals before any thread exists, so every thread inherits the mask and
    # sigwait() below receives them. (A Python handler would run only when the signal lands
    # on the main thread; one delivered to a worker would leave the main thread asleep.)
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        shares = _chosen_shares(config, args)
    except CommandError as exc:
        print(f"vfsframe serve: {exc}", file=sys.stderr)
        return exc.code
    try:
        plan = sandbox_plan(config, shares, args)
        sandbox = SandboxEntry(plan)
        supervised = sandbox.prepare(STOP_SIGNALS, _socket_paths(shares, args))
    except (OSError, ValueError) as exc:
        print(f"vfsframe serve: sandbox: {exc}", file=sys.stderr)
        if isinstance(exc, PermissionError):
            print("  (namespaces and chroot need root; --sandbox none runs without them, "
                  "still dropping capabilities and filtering system calls)", file=sys.stderr)  # fmt: skip
        return 2 if isinstance(exc, ValueError) else 1
    if supervised is not None:  # the parent outside the PID namespace: the child served
        return supervised
    opened: list[tuple[list[VhostUserServer], ShareChain]] = []
    try:
        for share in shares:
            opened.append(_open(share, args))
        sandbox.enter()
    except (OSError, ValueError) as exc:
        print(f"vfsframe serve: {exc}", file=sys.stderr)
        _close(opened)
        return 1
    for _, chain in opened:
        chain.start()
    servers = [server for share_servers, _ in opened for server in share_servers]
    for server in servers:
        server.start()
    log.info(
        "serving %d share(s) on %d socket(s); stop with SIGINT or SIGTERM",
        len(opened),
        len(servers),
    )
    while True:
        received = signal.sigtimedwait(STOP_SIGNALS, 1.0)
        if received is not None:
            log.info("stopping on %s", signal.Signals(received.si_signo).name)
            break
        if not any(server.running for server in servers):
            # Only an inherited, already-connected fd ends by itself: its front-end is gone.
            log.info("front-end gone; exiting")
            break
    _close(opened)
    sandbox.leave()
    return 0


def _chosen_shares(config: Any, args: argparse.Namespace) -> list[Any]:
    if args.share is not None or args.socket_path is not None or args.fd is not None:
        shares = [choose_share(config, args.share)]
    else:
        shares = list(config.shares)
    if args.socket_path is None and args.fd is None:
        missing = [s.tag for s in shares if not s.socket_paths]
        if missing:
            raise CommandError(
                f"share(s) {', '.join(missing)} have no `socket`; set one in the config "
                "or pass --share TAG --socket-path PATH",
                2,
            )
    return shares


def sandbox_plan(config: Any, shares: list[Any], args: argparse.Namespace) -> SandboxPlan:
    """The config's sandbox with the command line's overrides (ValueError if it cannot be)."""
    return make_plan(
        config,
        shares,
        mode=args.sandbox,
        seccomp=args.seccomp,
        uid_map=None if args.uid_map is None else [IdMapping.parse(m) for m in args.uid_map],
        gid_map=None if args.gid_map is None else [IdMapping.parse(m) for m in args.gid_map],
    )


def _socket_paths(shares: list[Any], args: argparse.Namespace) -> list[Path]:
    """The socket files the supervisor removes (the sandboxed server cannot reach them)."""
    listeners = [where for share in shares for where in _listeners(share, args)]
    return [Path(where["socket_path"]) for where in listeners if "socket_path" in where]


def _listeners(share: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Where each guest of the share connects: the command line's one socket or fd, else
    every socket of the config (`sockets` lists one per guest)."""
    if args.fd is not None:
        return [{"fd": args.fd}]
    if args.socket_path is not None:
        return [{"socket_path": args.socket_path}]
    return [{"socket_path": path} for path in share.socket_paths]


def _open(share: Any, args: argparse.Namespace) -> tuple[list[VhostUserServer], ShareChain]:
    """A listener per socket, each with its own device and FUSE session, over one chain."""
    listeners = _listeners(share, args)
    sessions = build_guest_sessions(share, len(listeners))
    servers: list[VhostUserServer] = []
    try:
        for session, where in zip(sessions, listeners, strict=True):
            name = session.options.name
            device = VhostUserFsDevice(
                session, request_queues=share.request_queues, workers=args.workers, name=name
            )
            server = VhostUserServer(device, name=name, **where)
            server.open()
            servers.append(server)  # only once open: stop() removes the socket file
    except BaseException:
        _close([(servers, sessions[0].chain)])
        raise
    return servers, sessions[0].chain


def _close(opened: list[tuple[list[VhostUserServer], ShareChain]]) -> None:
    for servers, chain in opened:
        for server in servers:
            server.stop()
        chain.close()
