"""A Linux guest mounts an overlay share over virtio-fs: a host directory (passthrough,
read-only) as the lower layer under a memory upper. The guest reads, writes, deletes and
renames; the host directory must come out byte-identical."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from vfsframe.testing.guestvm import Share, run_guest

from .servers import SERVE, WORKLOAD_TIMEOUT, Server

pytestmark = pytest.mark.guest


SCRIPT = r"""
M=/mnt/a
check mount "mount -t virtiofs $TAG $M"
check read_lower '[ "$(cat $M/etc/hostname)" = image ] && [ "$(cat $M/dir/sub/deep)" = deep ]'
check listing '[ "$(ls $M | tr "\n" " ")" = "big dir etc gone link " ]'
check oci_whiteout_hidden '[ ! -e $M/etc/motd ] && [ "$(ls $M/gone)" = kept ]'
check symlink '[ "$(readlink $M/link)" = etc/hostname ] && [ "$(cat $M/link)" = image ]'
check big_read '[ "$(md5sum < $M/big | cut -c1-32)" = "{big_md5}" ]'
ino_before=$(stat -c %i $M/etc/hostname)
check copy_up_write 'echo guest >> $M/etc/hostname &&
    [ "$(cat $M/etc/hostname)" = "$(printf "image\nguest")" ]'
check ino_stable '[ "$(stat -c %i $M/etc/hostname)" = "$ino_before" ]'
check big_append 'echo tail >> $M/big && [ "$(tail -c 5 $M/big)" = tail ]'
check chmod_lower 'chmod 600 $M/etc/passwd && [ "$(stat -c %a $M/etc/passwd)" = 600 ] &&
    [ "$(cat $M/etc/passwd)" = root ]'
check delete_lower 'rm $M/etc/passwd && [ ! -e $M/etc/passwd ] && ! ls $M/etc | grep -q passwd'
check recreate 'echo again > $M/etc/passwd && [ "$(cat $M/etc/passwd)" = again ]'
check rm_rf_lower_dir 'rm -rf $M/dir && [ ! -e $M/dir ]'
check opaque_dir 'mkdir $M/dir && [ -z "$(ls -A $M/dir)" ] && echo n > $M/dir/new &&
    [ "$(ls $M/dir)" = new ]'
check rename_file 'mv $M/etc/hostname $M/hostname && [ ! -e $M/etc/hostname ] &&
    [ "$(head -n 1 $M/hostname)" = image ]'
check rename_lower_dir 'mv $M/gone $M/moved && [ ! -e $M/gone ] && [ "$(ls $M/moved)" = kept ]'
check hardlink 'ln $M/hostname $M/hard && [ "$(stat -c %h $M/hard)" = 2 ] &&
    [ "$(stat -c %i $M/hard)" = "$(stat -c %i $M/hostname)" ]'
check new_tree 'mkdir -p $M/x/y && dd if=/dev/zero of=$M/x/y/z bs=1M count=4 2>/dev/null &&
    [ "$(stat -c %s $M/x/y/z)" = 4194304 ]'
check umount "umount $M"
"""


def checksum(root: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            st = os.lstat(path)
            meta = f"{st.st_mode:o} {st.st_uid} {st.st_mtime_ns}"
            if path.is_file() and not path.is_symlink():
                meta += " " + hashlib.sha256(path.read_bytes()).hexdigest()
            out[str(path.relative_to(root))] = meta
    return out


class VfsframeOverlay(Server):
    """`vfsframe serve` with an overlay: passthrough lower (read-only), memory upper."""

    name = "vfsframe-overlay"

    def __init__(self, workdir: Path, lower: Path, tag: str = "data") -> None:
        super().__init__(workdir, tag)
        self.request_queues = 2
        self.config = workdir / f"{self.name}.toml"
        self.config.write_text(
            f'[[share]]\ntag = "{tag}"\nsocket = "{self.socket}"\nrequest_queues = 2\n'
            'cache = "auto"\n[share.backend]\ntype = "overlay"\n'
            'upper = { type = "memory", capacity = "256MiB" }\n'
            f'[[share.backend.lower]]\ntype = "passthrough"\nroot = "{lower}"\nreadonly = true\n'
        )

    def command(self) -> list[str]:
        return [*SERVE, "serve", str(self.config)]


def make_lower(root: Path) -> str:
    """A small image-like tree, with OCI whiteouts of its own; returns big's md5."""
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("image\n")
    (root / "etc" / "passwd").write_text("root\n")
    (root / "etc" / ".wh.motd").touch()  # hides nothing here, and never shows
    (root / "dir" / "sub").mkdir(parents=True)
    (root / "dir" / "sub" / "deep").write_text("deep\n")
    (root / "gone").mkdir()
    (root / "gone" / "kept").write_text("k\n")
    os.symlink("etc/hostname", root / "link")
    big = os.urandom(3 << 20)
    (root / "big").write_bytes(big)
    root.chmod(0o755)
    return hashlib.md5(big).hexdigest()


def test_overlay_share_in_a_guest(kernel: Path, tmp_path: Path, running: list[Server]) -> None:
    lower = tmp_path / "lower"
    lower.mkdir()
    big_md5 = make_lower(lower)
    before = checksum(lower)
    server = VfsframeOverlay(tmp_path, lower)
    running.append(server)
    server.start()
    share = Share(server.tag, server.socket, server.request_queues)
    script = f"TAG={server.tag}\n" + SCRIPT.replace("{big_md5}", big_md5)
    result = run_guest(script, [share], tmp_path / "vm", timeout=WORKLOAD_TIMEOUT, kernel=kernel)  # type: ignore[arg-type]
    assert result.finished, f"{result.serial[-3000:]}\n{server.log()[-3000:]}"
    assert not result.failed(), (result.failed(), server.log()[-3000:])
    assert len(result.checks) == SCRIPT.count("\ncheck "), result.checks
    assert checksum(lower) == before  # the lower layer is exactly as it was
    assert server.stop() == 0, server.log()[-2000:]
