"""The servers a rootfs guest boots from: `vfsframe serve` with one share of any backend, and
the reference C virtiofsd over a given tree; plus the installation media (.deb packages built
on the host) for the read-only share."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from ..guest.servers import SERVE, ReferenceVirtiofsd, Server


class VfsframeShare(Server):
    """`vfsframe serve` with one share whose `[share.backend]` table is `backend_toml`."""

    def __init__(
        self, workdir: Path, name: str, tag: str, backend_toml: str, middleware_toml: str = ""
    ) -> None:
        self.name = name
        super().__init__(workdir, tag)
        self.config = workdir / f"{name}.toml"
        self.config.write_text(
            f'[[share]]\ntag = "{tag}"\nsocket = "{self.socket}"\nrequest_queues = 1\n'
            f'cache = "auto"\n\n[share.backend]\n{backend_toml}\n{middleware_toml}'
        )

    def command(self) -> list[str]:
        return [*SERVE, "serve", str(self.config)]


def passthrough_toml(root: Path, readonly: bool = False) -> str:
    return f'type = "passthrough"\nroot = "{root}"\nreadonly = {str(readonly).lower()}\n'


# The other way to make media read-only: an acl in front of a writable backend refuses every
# change (EROFS) before the backend sees it.
READONLY_ACL_TOML = '[[share.middleware]]\ntype = "acl"\nreadonly = true\ndefault = "allow"\n'


def golden_overlay_toml(lower: Path, upper: Path) -> str:
    """The golden image: the tree read-only as the lower layer, the guest's changes in a
    directory of its own as the upper."""
    return (
        f'type = "overlay"\nupper = {{ type = "passthrough", root = "{upper}" }}\n\n'
        f"[[share.backend.lower]]\n{passthrough_toml(lower, readonly=True)}"
    )


class ReferenceTree(ReferenceVirtiofsd):
    """The reference C virtiofsd serving an existing tree."""

    def __init__(self, workdir: Path, tag: str, source: Path) -> None:
        super().__init__(workdir, tag)
        self.source.rmdir()  # the empty directory the base class made
        self.source = source


# Two packages, one depending on the other, so `dpkg -i /media/*.deb` has to order them.
MEDIA_PACKAGES = {
    "vfsframe-media-tool": ("", "#!/bin/sh\necho media tool installed from a read-only share\n"),
    "vfsframe-media-data": ("Depends: vfsframe-media-tool\n", "#!/bin/sh\necho media data\n"),
}


def build_media(directory: Path) -> list[Path]:
    """The installation media: a directory of .deb packages built with dpkg-deb."""
    directory.mkdir(parents=True, exist_ok=True)
    debs = []
    for package, (depends, program) in MEDIA_PACKAGES.items():
        root = Path(tempfile.mkdtemp(prefix=f"{package}-", dir=directory.parent))
        root.chmod(0o755)  # the package's "./": mkdtemp's 0700 would be a strange root
        (root / "DEBIAN").mkdir(parents=True)
        (root / "DEBIAN" / "control").write_text(
            f"Package: {package}\nVersion: 1.0\nArchitecture: all\n{depends}"
            "Maintainer: vfsframe tests <tests@vfsframe.invalid>\n"
            "Description: installed by a guest from a read-only virtio-fs share\n"
        )
        program_path = root / "usr" / "bin" / package
        program_path.parent.mkdir(parents=True)
        program_path.write_text(program)
        program_path.chmod(0o755)
        deb = directory / f"{package}_1.0_all.deb"
        subprocess.run(
            ["dpkg-deb", "--root-owner-group", "--build", str(root), str(deb)],
            check=True, capture_output=True,
        )  # fmt: skip
        shutil.rmtree(root)
        debs.append(deb)
    return debs
