"""The example third-party package, examples/archive-backend, the way a user gets it: pip
installs vfsframe and the package into a fresh virtualenv; then, in that virtualenv only,
`vfsframe plugins` finds it, `vfsframe check` accepts its example config, its own tests (the
conformance kit) pass, and `vfsframe mount` serves an archive through both host transports."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_fuse

pytestmark = pytest.mark.mount

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "archive-backend"
README = b"hello from inside the archive\n"


def run(*command: str | Path, cwd: Path | None = None, timeout: float = 600) -> str:
    done = subprocess.run(
        [str(part) for part in command], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, (
        f"{command} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    )
    return done.stdout


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A new virtualenv with vfsframe (this checkout), the example package and what its
    tests need; pip's cache keeps it quick after the first time."""
    path = tmp_path_factory.mktemp("venv") / "venv"
    run(sys.executable, "-m", "venv", path, timeout=120)
    # pip builds in the source tree; a copy keeps build/ and *.egg-info out of examples/.
    example = shutil.copytree(EXAMPLE, path.parent / "archive-backend")
    packages = [REPO, example, "mfusepy>=3.1.1", "pytest>=8", "pytest-timeout>=2.2"]
    run(path / "bin" / "pip", "install", "--quiet", "--disable-pip-version-check", *packages)
    yield path


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example's config, pointed at a real archive (the example names a release tarball
    that exists only on its author's server)."""
    directory = tmp_path_factory.mktemp("archive")
    source = directory / "content"
    (source / "docs").mkdir(parents=True)
    (source / "README").write_bytes(README)
    (source / "docs" / "big.bin").write_bytes(os.urandom(3 << 20))
    archive = directory / "release.tar.xz"
    with tarfile.open(archive, "w:xz") as tar:
        for child in sorted(source.iterdir()):
            tar.add(child, arcname=child.name)
    text = (EXAMPLE / "archive.toml").read_text()
    assert 'path = "/srv/releases/app-1.4.2.tar.xz"' in text
    config = directory / "archive.toml"
    config.write_text(text.replace("/srv/releases/app-1.4.2.tar.xz", str(archive)))
    return config


def test_vfsframe_plugins_lists_it_with_its_origin(venv: Path) -> None:
    out = run(venv / "bin" / "vfsframe", "plugins")
    line = next(line for line in out.splitlines() if line.strip().startswith("archive "))
    assert "(vfsframe-archive:archive)" in line
    assert "(vfsframe:memory)" in out  # the built-ins are found the same way


def test_vfsframe_check_accepts_the_example_config(venv: Path, config: Path) -> None:
    out = run(venv / "bin" / "vfsframe", "check", config)
    assert "backend archive" in out and "release.tar.xz" in out, out


def test_vfsframe_check_refuses_a_missing_archive(venv: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text((EXAMPLE / "archive.toml").read_text())
    done = subprocess.run([venv / "bin" / "vfsframe", "check", bad], capture_output=True, text=True)
    assert done.returncode == 2
    assert "share[0].backend.path: /srv/releases/app-1.4.2.tar.xz does not exist" in (
        done.stdout + done.stderr
    )


def test_the_packages_own_tests_pass_with_the_kit(venv: Path) -> None:
    require_fuse()
    out = run(venv / "bin" / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=EXAMPLE)
    assert " failed" not in out and " error" not in out, out
    assert "checks not applicable (deselected)" in out, out  # the kit's plugin was loaded
    passed = int(out.rsplit(" passed", 1)[0].rsplit(maxsplit=1)[-1])
    assert passed >= 150, out


@pytest.mark.parametrize("transport", ["devfuse", "fusepy"])
def test_mount_serves_the_archive(venv: Path, config: Path, tmp_path: Path, transport: str) -> None:
    require_fuse()
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    script = (
        f"cat {mountpoint}/README && sha256sum {mountpoint}/docs/big.bin && "
        f"ls {mountpoint} && (touch {mountpoint}/new 2>&1 || true)"
    )
    out = run(
        venv / "bin" / "vfsframe",
        "mount",
        config,
        mountpoint,
        "--transport",
        transport,
        "--run",
        "sh",
        "-c",
        script,
    )
    content = config.parent / "content"
    digest = run("sha256sum", content / "docs" / "big.bin").split()[0]
    assert out.startswith(README.decode()), out
    assert digest in out
    assert "docs" in out and "README" in out
    assert "Read-only file system" in out
    assert not os.path.ismount(mountpoint)
