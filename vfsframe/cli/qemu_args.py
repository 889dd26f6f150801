"""`vfsframe qemu-args CONFIG`: the QEMU options and libvirt XML that attach each share."""

from __future__ import annotations

import argparse
import re
import shlex
import sys
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
        "request queues) and the libvirt <filesystem> element. Run `vfsframe serve CONFIG` "
        "first; the guest mounts with `mount -t virtiofs TAG /mnt`.",
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
        missing = [s.tag for s in shares if s.socket is None]
        if missing:
            raise CommandError(f"share(s) {', '.join(missing)} have no `socket` in the config", 2)
    except CommandError as exc:
        print(f"vfsframe qemu-args: {exc}", file=sys.stderr)
        return exc.code
    if args.format in ("qemu", "both"):
        print(qemu_options(shares, args.memory))
    if args.format == "both":
        print()
    if args.format in ("libvirt", "both"):
        print(libvirt_xml(shares))
    return 0


def chardev_id(tag: str) -> str:
    """A QEMU id for a tag: ids are letters, digits, '-', '.', '_', starting with a letter."""
    return "vfsframe-" + re.sub(r"[^A-Za-z0-9._-]", "_", tag)


def _qemu_value(value: str) -> str:
    # In QEMU option values a comma separates options; a literal one is written twice.
    return value.replace(",", ",,")


def qemu_arg_list(shares: list[Any], memory: str) -> list[str]:
    args = [
        "-m", memory,
        "-object", f"memory-backend-memfd,id=mem,size={memory},share=on",
        "-numa", "node,memdev=mem",
    ]  # fmt: skip
    for share in shares:
        cid = chardev_id(share.tag)
        args += ["-chardev", f"socket,id={cid},path={_qemu_value(str(share.socket))}"]
        device = f"vhost-user-fs-pci,chardev={cid},tag={_qemu_value(share.tag)}"
        device += f",queue-size={QUEUE_SIZE}"
        if share.request_queues > 1:
            device += f",num-request-queues={share.request_queues}"
        args += ["-device", device]
    return args


def qemu_options(shares: list[Any], memory: str) -> str:
    lines = ["# QEMU options (guest RAM must be shared memory for vhost-user):"]
    args = qemu_arg_list(shares, memory)
    pairs = zip(args[::2], args[1::2], strict=True)
    lines += [f"{shlex.quote(opt)} {shlex.quote(value)} \\" for opt, value in pairs]
    lines[-1] = lines[-1].removesuffix(" \\")
    return "\n".join(lines)


def libvirt_xml(shares: list[Any]) -> str:
    lines = [
        "<!-- libvirt: in <domain>, guest RAM shared (vhost-user needs it) -->",
        "<memoryBacking>",
        "  <source type='memfd'/>",
        "  <access mode='shared'/>",
        "</memoryBacking>",
        "<!-- in <devices>, one per share; `vfsframe serve` owns the socket -->",
    ]
    for share in shares:
        if share.request_queues > 1:
            lines.append(
                f"<!-- share {share.tag}: libvirt cannot set num-request-queues, so this guest "
                f"uses 1 of the {share.request_queues} request queues; the QEMU options above "
                "use them all -->"
            )
        lines += [
            "<filesystem type='mount'>",
            f"  <driver type='virtiofs' queue='{QUEUE_SIZE}'/>",
            f"  <source socket={quoteattr(str(share.socket))}/>",
            f"  <target dir={quoteattr(share.tag)}/>",
            "</filesystem>",
        ]
    return "\n".join(lines)
