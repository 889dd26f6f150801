"""`vfsframe mount CONFIG MOUNTPOINT`: serve a share through the host kernel, over /dev/fuse
(our own FUSE session, the default) or libfuse's high-level API (``--transport fusepy``)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from typing import Any, Protocol

from vfsframe.chain import ShareChain
from vfsframe.cli.common import CommandError, choose_share, load_or_report
from vfsframe.runtime import build_chain, build_session
from vfsframe.transport.devfuse import DevFuseMount, MountError, MountOptions

log = logging.getLogger("vfsframe.mount")

TRANSPORTS = ("devfuse", "fusepy")


class Mount(Protocol):
    """What both transports' mounts offer (DevFuseMount, FusepyMount)."""

    mountpoint: str

    def mount(self) -> None: ...
    def start(self) -> None: ...
    def wait(self, timeout: float | None = None) -> bool: ...
    def unmount(self) -> None: ...


def build_mount(
    transport: str, share: Any, mountpoint: str, options: MountOptions
) -> tuple[Mount, ShareChain]:
    """The one place a transport is chosen: a mount (not yet mounted) serving ``share``, and
    the chain to close afterwards. Raises OSError when the backend cannot start, MountError
    when the transport cannot."""
    if transport == "fusepy":
        from vfsframe.transport.fusepy import FusepyMount  # an optional dependency

        chain = build_chain(share.backend, share.middleware)
        try:
            return FusepyMount(chain, mountpoint, options, share.cache), chain
        except MountError:
            chain.close()
            raise
    session = build_session(share)
    return DevFuseMount(session, mountpoint, options), session.chain


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "mount",
        help="mount a share on the host through /dev/fuse",
        description="Mount one share of CONFIG at MOUNTPOINT and serve it until unmounted, "
        "interrupted (SIGINT/SIGTERM), or until --run's command ends. "
        "CONFIG may be builtin:memory for the embedded in-memory default.",
    )
    parser.add_argument("config", help="config file (.toml, .yaml, .json) or builtin:NAME")
    parser.add_argument("mountpoint", help="an existing directory")
    parser.add_argument("--share", metavar="TAG", help="which share, if the config has several")
    parser.add_argument(
        "-o",
        dest="options",
        metavar="OPTIONS",
        action="append",
        default=[],
        help="mount options: allow_other, default_permissions, ro, debug, fsname=, workers=N",
    )
    parser.add_argument(
        "--transport",
        choices=TRANSPORTS,
        default="devfuse",
        help="devfuse: vfsframe's own FUSE session on /dev/fuse (default); "
        "fusepy: libfuse's high-level API through mfusepy/fusepy (pip install vfsframe[fusepy])",
    )
    parser.add_argument(
        "--run",
        nargs=argparse.REMAINDER,
        metavar="COMMAND",
        help="run COMMAND with the share mounted, then unmount and exit with its status",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    try:
        share = choose_share(config, args.share)
        options = MountOptions.parse(",".join(args.options))
    except (CommandError, ValueError) as exc:
        print(f"vfsframe mount: {exc}", file=sys.stderr)
        return getattr(exc, "code", 2)
    if options.debug:
        logging.getLogger("vfsframe").setLevel(logging.DEBUG)
    if options.fsname == "vfsframe":
        options.fsname = f"vfsframe:{share.tag}"
    try:
        mount, chain = build_mount(args.transport, share, args.mountpoint, options)
    except OSError as exc:  # the backend cannot start: a missing bucket, a bad root ...
        print(f"vfsframe mount: share {share.tag!r}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except MountError as exc:  # e.g. the fusepy transport without mfusepy installed
        print(f"vfsframe mount: {exc}", file=sys.stderr)
        return 1
    created = _make_mountpoint(args.mountpoint)
    try:
        chain.start()  # before mounting: libfuse (fusepy) serves from the mount on
        mount.mount()
    except MountError as exc:
        print(f"vfsframe mount: {exc}", file=sys.stderr)
        chain.close()
        _remove_mountpoint(args.mountpoint, created)
        return 1
    mount.start()
    try:
        if args.run:
            return subprocess.run(args.run).returncode
        print(
            f"vfsframe: share {share.tag!r} mounted on {mount.mountpoint}; Ctrl-C unmounts",
            flush=True,
        )
        _serve_until_stopped(mount)
        return 0
    finally:
        mount.unmount()
        chain.close()
        _remove_mountpoint(args.mountpoint, created)
        log.info("unmounted %s", mount.mountpoint)


def _make_mountpoint(path: str) -> bool:
    """Create a missing mountpoint (as `mount --mkdir` does); True if we made it."""
    try:
        os.lstat(path)
        return False
    except FileNotFoundError:
        os.makedirs(path)
        return True
    except OSError:  # e.g. ENOTCONN on a stale mount: let the mount step explain it
        return False


def _remove_mountpoint(path: str, created: bool) -> None:
    if created:
        with contextlib.suppress(OSError):
            os.rmdir(path)


def _serve_until_stopped(mount: Mount) -> None:
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("%s: unmounting", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    # Wake up now and then: signal handlers run only between bytecodes of the main thread.
    while not stop.is_set() and not mount.wait(0.2):
        pass
