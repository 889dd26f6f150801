"""Archives of a kit Seed, written the way common tools write them."""

from __future__ import annotations

import stat
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

from vfsframe.testing.conformance import Dir, File, HardLink, Seed, Symlink


def make_tar(seed: Seed, archive: Path, compression: str = "") -> Path:
    """A tar of ``seed`` as `tar -c` writes it: hard links as links, directories with modes
    and times. ``compression``: "", "gz", "bz2" or "xz"."""
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        seed.write_to(root)
        with tarfile.open(archive, f"w:{compression}", format=tarfile.PAX_FORMAT) as tar:
            for child in sorted(root.iterdir()):
                tar.add(child, arcname=child.name)
    return archive


def without_hard_links(seed: Seed) -> Seed:
    """The seed with each hard link replaced by a copy: zip has no hard links."""
    entries = dict(seed.entries)
    for path, entry in seed.entries.items():
        if isinstance(entry, HardLink):
            entries[path] = entries[entry.to]
    return Seed(entries)


def make_zip(seed: Seed, archive: Path, compression: int = zipfile.ZIP_DEFLATED) -> Path:
    """A zip of ``seed`` as Info-ZIP writes it: Unix modes in the external attributes,
    symlinks as members holding their target, directories implied unless declared."""
    with zipfile.ZipFile(archive, "w", compression) as out:
        for path, entry in seed.entries.items():
            if isinstance(entry, HardLink):
                raise ValueError("zip has no hard links: use without_hard_links(seed)")
            name = path + "/" if isinstance(entry, Dir) else path
            mtime = entry.mtime if isinstance(entry, File | Dir) else seed_time()
            info = zipfile.ZipInfo(name, time.localtime(mtime)[:6])
            info.compress_type = compression
            if isinstance(entry, Dir):
                info.external_attr = (stat.S_IFDIR | entry.mode) << 16 | 0x10
                out.writestr(info, b"")
            elif isinstance(entry, Symlink):
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                out.writestr(info, entry.target)
            else:
                info.external_attr = (stat.S_IFREG | entry.mode) << 16
                out.writestr(info, entry.data)
    return archive


def seed_time() -> int:
    from vfsframe.testing.conformance.seed import SEED_MTIME

    return SEED_MTIME
