"""The guest filesystem workload over a passthrough share of a host directory, and the same
workload against the reference C virtiofsd over an equivalent directory: the guest must see
identical results."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from .servers import ReferenceVirtiofsd, VfsframePassthrough, assert_same_results, boot_workload

pytestmark = pytest.mark.guest


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
