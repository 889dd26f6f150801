"""`vfsframe qemu-args CONFIG`: the QEMU options and libvirt XML that attach each share."""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from vfsframe.cli.common import CommandError, choose_share, load_or_report

QUEUE_SIZE = 1024


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "qemu-args",
        help="print the QEMU options and libvirt XML that attach the shares to a guest",
        description="For each share with a socket: the QEMU command-line options (shared "
        "memfd guest RAM, vhost-user chardev, vhost-user-fs-pci with the tag and the share's "
        "request queues) and the libvirt <filesystem> element. A share with several "
        "`sockets` is attached to several guests: the output then has one block per guest. "
        "Run `vfsframe serve CONFIG` first; the guest mounts with `mount -t virtiofs TAG /mnt`.",
    )
    parser.add_argument("config", help="config file (.toml, .yaml, .json) or builtin:NAME")
    parser.add_argument("--share", metavar="TAG", help="only this share")
    parser.add_argument(
        "--memory",
        default="2G",
        metavar="SIZE",
        help="guest RAM size; vhost-user needs all of it shared (default 2G)",
    )
    parser.add_argument(
        "--format",
        choices=["qemu", "libvirt", "both"],
        default="both",
        help="what to print (default both)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    try:
        shares = [choose_share(config, args.share)] if args.share else list(config.shares)
        missing = [s.tag for s in shares if not s.socket_paths]
        if missing:
            raise CommandError(f"share(s) {', '.join(missing)} have no `socket` in the config", 2)
    except CommandError as exc:
        print(f"vfsframe qemu-args: {exc}", file=sys.stderr)
        return exc.code
    guests = guest_attachments(shares)
    blocks = []
    for number, attached in enumerate(guests, 1):
        heading = [f"# guest {number} of {len(guests)}"] if len(guests) > 1 else []
        if args.format in ("qemu", "both"):
            blocks.append("\n".join([*heading, qemu_options(attached, args.memory)]))
        if args.format in ("libvirt", "both"):
            heading = [f"<!-- guest {number} of {len(guests)} -->"] if heading else []
            blocks.append("\n".join([*heading, libvirt_xml(attached)]))
    print("\n\n".join(blocks))
    return 0


def guest_attachments(shares: list[Any]) -> list[list[tuple[Any, Path]]]:
    """The (share, socket) pairs each guest attaches. A socket serves one guest at a time, so
    guest N gets the N-th socket of every share that lists that many (a one-socket share goes
    to guest 1 only); with no `sockets` lists, that is one guest with every share."""
    count = max(len(share.socket_paths) for share in shares)
    return [
        [(share, share.socket_paths[n]) for share in shares if n < len(share.socket_paths)]
        for n in range(count)
    ]


def chardev_id(tag: str) -> str:
    """A QEMU id for a tag: ids are letters, digits, '-', '.', '_', starting with a letter."""
    return "vfsframe-" + re.sub(r"[^A-Za-z0-9._-]", "_", tag)


def _qemu_value(value: str) -> str:
    # In QEMU option values a comma separates options; a literal one is written twice.
    return value.replace(",", ",,")


def qemu_arg_list(attached: list[tuple[Any, Path]], memory: str) -> list[str]:
    args = [
        "-m", memory,
        "-object", f"memory-backend-memfd,id=mem,size={memory},share=on",
        "-numa", "node,memdev=mem",
    ]  # fmt: skip
    for share, socket in attached:
        cid = chardev_id(share.tag)
        args += ["-chardev", f"socket,id={cid},path={_qemu_value(str(socket))}"]
        device = f"vhost-user-fs-pci,chardev={cid},tag={_qemu_value(share.tag)}"
        device += f",queue-size={QUEUE_SIZE}"
        if share.request_queues > 1:
            device += f",num-request-queues={share.request_queues}"
        args += ["-device", device]
    return args


def qemu_options(attached: list[tuple[Any, Path]], memory: str) -> str:
    lines = ["# QEMU options (guest RAM must be shared memory for vhost-user):"]
    args = qemu_arg_list(attached, memory)
    pairs = zip(args[::2], args[1::2], strict=True)
    lines += [f"{shlex.quote(opt)} {shlex.quote(value)} \\" for opt, value in pairs]
    lines[-1] = lines[-1].removesuffix(" \\")
    return "\n".join(lines)


def libvirt_xml(attached: list[tuple[Any, Path]]) -> str:
    lines = [
        "<!-- libvirt: in <domain>, guest RAM shared (vhost-user needs it) -->",
        "<memoryBacking>",
        "  <source type='memfd'/>",
        "  <access mode='shared'/>",
        "</memoryBacking>",
        "<!-- in <devices>, one per share; `vfsframe serve` owns the socket -->",
    ]
    for share, socket in attached:
        if share.request_queues > 1:
            lines.append(
                f"<!-- share {share.tag}: libvirt cannot set num-request-queues, so this guest "
                f"uses 1 of the {share.request_queues} request queues; the QEMU options above "
                "use them all -->"
            )
        lines += [
            "<filesystem type='mount'>",
            f"  <driver type='virtiofs' queue='{QUEUE_SIZE}'/>",
            f"  <source socket={quoteattr(str(socket))}/>",
            f"  <target dir={quoteattr(share.tag)}/>",
            "</filesystem>",
        ]
    return "\n".join(lines)
