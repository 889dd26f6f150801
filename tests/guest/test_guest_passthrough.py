"""The guest filesystem workload over a passthrough share of a host directory, and the same
workload against the reference C virtiofsd over an equivalent directory: the guest must see
identical results."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pytest

from .servers import SERVE, ReferenceVirtiofsd, Server, assert_same_results, boot_workload

pytestmark = pytest.mark.guest


class VfsframePassthrough(Server):
    """`vfsframe serve` with the passthrough backend over a fresh empty directory."""

    name = "vfsframe-passthrough"

    def __init__(self, workdir: Path, tag: str = "data", request_queues: int = 2) -> None:
        super().__init__(workdir, tag)
        self.request_queues = request_queues
        self.source = Path(tempfile.mkdtemp(prefix="pt-share-", dir=workdir))
        self.source.chmod(0o755)  # as the reference's share root
        self.config = workdir / f"{self.name}.toml"
        self.config.write_text(
            f'[[share]]\ntag = "{tag}"\nsocket = "{self.socket}"\n'
            f'request_queues = {request_queues}\ncache = "auto"\n'
            f'[share.backend]\ntype = "passthrough"\nroot = "{self.source}"\n'
        )

    def command(self) -> list[str]:
        return [*SERVE, "serve", str(self.config)]


@pytest.fixture(scope="module")
def passthrough_run(kernel: Path, tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp("passthrough")
    server = VfsframePassthrough(workdir)
    server.start()
    try:
        result = boot_workload(server, workdir / "vm", kernel)
        time.sleep(0.5)
        alive = server.alive()
    finally:
        status = server.stop()
    return result, server, alive, status


def test_workload_passes_on_passthrough(passthrough_run) -> None:
    result, server, alive, status = passthrough_run
    assert result.checks, result.serial[-3000:]
    assert not result.failed(), (result.failed(), server.log()[-3000:])
    assert result.results["big_size"] == str(64 << 20)
    assert alive and status == 0, server.log()[-2000:]


def test_passthrough_matches_reference_virtiofsd(passthrough_run, kernel, tmp_path) -> None:
    ours, _, _, _ = passthrough_run
    reference = ReferenceVirtiofsd(tmp_path)
    reference.start()
    try:
        theirs = boot_workload(reference, tmp_path / "vm", kernel)
    finally:
        reference.stop()
    assert_same_results(ours, theirs)
