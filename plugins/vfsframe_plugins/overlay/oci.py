"""Unpack a container image into overlay lower layers: one directory per image layer.

The overlay reads OCI whiteouts (`.wh.NAME`, `.wh..wh..opq`) as they are, so an image needs no
conversion: each layer tarball is unpacked into a directory of its own, and the directories,
topmost (last applied) first, are the overlay's lower layers. Two image formats are read: an
OCI image layout (`oci-layout`, `index.json`, `blobs/`, e.g. from `skopeo copy ... oci:DIR`)
and a `docker save` archive unpacked into a directory (`manifest.json`).

    python -m vfsframe_plugins.overlay.oci IMAGE_DIR DEST [--tag TAG] [--upper-capacity 1GiB]

unpacks into DEST/layers/0, 1, ... and prints a config with an overlay share of them.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tarfile
from pathlib import Path
from typing import IO

MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)


class ImageError(Exception):
    """The directory is not an image this module can read; the message says why."""


def layer_blobs(image: Path) -> list[Path]:
    """The image's layer tarballs, base layer first."""
    if (image / "index.json").is_file():
        return _oci_layers(image)
    if (image / "manifest.json").is_file():
        manifest = json.loads((image / "manifest.json").read_text())
        if not manifest:
            raise ImageError(f"{image}/manifest.json lists no image")
        return [image / name for name in manifest[0]["Layers"]]
    raise ImageError(f"{image} has neither index.json (OCI layout) nor manifest.json (docker save)")


def _blob(image: Path, digest: str) -> Path:
    algorithm, _, value = digest.partition(":")
    path = image / "blobs" / algorithm / value
    if not path.is_file():
        raise ImageError(f"blob {digest} is missing from {image}/blobs")
    return path


def _oci_layers(image: Path) -> list[Path]:
    index = json.loads((image / "index.json").read_text())
    manifests = [m for m in index.get("manifests", []) if m.get("mediaType") in MANIFEST_TYPES]
    if len(manifests) != 1:
        raise ImageError(
            f"{image}/index.json has {len(manifests)} image manifests; unpack one platform "
            "(e.g. skopeo copy --override-arch) so there is exactly one"
        )
    manifest = json.loads(_blob(image, manifests[0]["digest"]).read_text())
    return [_blob(image, layer["digest"]) for layer in manifest["layers"]]


def _open_layer(path: Path) -> IO[bytes]:
    with open(path, "rb") as probe:
        magic = probe.read(4)
    if magic[:2] == b"\x1f\x8b":
        return gzip.open(path, "rb")
    if magic == b"\x28\xb5\x2f\xfd":
        raise ImageError(f"{path} is zstd-compressed; decompress it first (zstd -d)")
    return open(path, "rb")


def _safe_member(member: tarfile.TarInfo, destination: str) -> tarfile.TarInfo:
    # tarfile's "tar" filter refuses absolute names, escapes and links out of the layer; the
    # mode is kept as the image has it (setuid programs stay setuid).
    checked = tarfile.tar_filter(member, destination)
    return checked.replace(mode=member.mode, deep=False)


def unpack_layer(blob: Path, destination: Path) -> None:
    destination.mkdir(parents=True)
    with _open_layer(blob) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
        tar.extractall(destination, filter=_safe_member)


def unpack(image: Path, destination: Path) -> list[Path]:
    """Unpack every layer into ``destination/layers/N``; the directories, topmost first."""
    layers = []
    for number, blob in enumerate(layer_blobs(image)):
        directory = destination / "layers" / str(number)
        unpack_layer(blob, directory)
        layers.append(directory)
    return layers[::-1]


def overlay_config(lowers: list[Path], tag: str, upper_capacity: str) -> str:
    """A TOML config with one overlay share of the layers (read-only passthrough lowers)."""
    lines = [
        "[[share]]",
        f"tag = {json.dumps(tag)}",
        "[share.backend]",
        'type = "overlay"',
        f'upper = {{ type = "memory", capacity = {json.dumps(upper_capacity)} }}',
    ]
    for lower in lowers:
        lines += [
            "[[share.backend.lower]]",
            'type = "passthrough"',
            f"root = {json.dumps(str(lower))}",
            "readonly = true",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("image", type=Path, help="OCI image layout or docker-save directory")
    parser.add_argument("destination", type=Path, help="where to unpack (must not exist)")
    parser.add_argument("--tag", default="image", help="the share's tag in the printed config")
    parser.add_argument("--upper-capacity", default="1GiB", help="memory upper layer's capacity")
    args = parser.parse_args(argv)
    if args.destination.exists():
        parser.error(f"{args.destination} exists; give a new directory")
    try:
        lowers = unpack(args.image, args.destination.resolve())
    except (ImageError, OSError, tarfile.TarError, KeyError, ValueError) as exc:
        print(f"cannot unpack {args.image}: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(overlay_config(lowers, args.tag, args.upper_capacity))
    return 0


if __name__ == "__main__":
    sys.exit(main())
