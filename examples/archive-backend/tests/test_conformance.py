"""The vfsframe conformance kit against the archive backend: every archive format, on the
in-process chain and through /dev/fuse and fusepy mounts. The kit comes with vfsframe (its
pytest plugin is loaded through the pytest11 entry point); this file is all it takes."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from vfsframe.testing.conformance import BackendConformance, Capabilities, default_seed

from .archives import make_tar, make_zip, without_hard_links

SEED = default_seed()
ZIP_SEED = without_hard_links(SEED)


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Each archive of the seed, built once for the module."""
    directory = tmp_path_factory.mktemp("archives")
    for compression in ("", "gz", "xz"):
        make_tar(
            SEED, directory / f"seed.tar{'.' + compression if compression else ''}", compression
        )
    make_zip(ZIP_SEED, directory / "seed.zip")
    make_zip(ZIP_SEED, directory / "stored.zip", zipfile.ZIP_STORED)
    return directory


class ArchiveConformance(BackendConformance):
    archive = ""

    @pytest.fixture
    def backend_config(self, archives: Path) -> str:
        return f'type = "archive"\npath = "{archives / self.archive}"'


class TestTar(ArchiveConformance):
    """A plain tar: members read in place with pread."""

    archive = "seed.tar"
    capabilities = Capabilities.read_only(SEED, hard_links=True, symlinks=True, xattrs=False)


class TestTarGz(ArchiveConformance):
    archive = "seed.tar.gz"
    capabilities = Capabilities.read_only(SEED, hard_links=True, symlinks=True, xattrs=False)


class TestTarXz(ArchiveConformance):
    archive = "seed.tar.xz"
    capabilities = Capabilities.read_only(SEED, hard_links=True, symlinks=True, xattrs=False)


class TestZip(ArchiveConformance):
    """Deflated members: each open file decompresses its own stream."""

    archive = "seed.zip"
    capabilities = Capabilities.read_only(ZIP_SEED, hard_links=False, symlinks=True, xattrs=False)


class TestZipStored(ArchiveConformance):
    """Stored members: read in place, after their local headers."""

    archive = "stored.zip"
    capabilities = Capabilities.read_only(ZIP_SEED, hard_links=False, symlinks=True, xattrs=False)
