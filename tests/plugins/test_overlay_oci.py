"""Unpacking container images into overlay lower layers (vfsframe_plugins.overlay.oci)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
import tomllib
from pathlib import Path

import pytest
from vfsframe_plugins.overlay import oci

from tests.plugins.memfs_helpers import ROOT, MemFs
from vfsframe.config import validate_config
from vfsframe.runtime import build_chain


def layer_tar(members: dict[str, bytes | None], mode: int = 0o644) -> bytes:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            if content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(content), mode
                tar.addfile(info, io.BytesIO(content))
    return data.getvalue()


BASE = {
    "bin": None,
    "bin/sh": b"#!shell",
    "etc": None,
    "etc/motd": b"hello",
    "etc/os-release": b"base",
    "var": None,
    "var/cache": None,
    "var/cache/a": b"a",
}
TOP = {
    "etc": None,
    "etc/.wh.motd": b"",
    "etc/os-release": b"top",
    "var": None,
    "var/cache": None,
    "var/cache/.wh..wh..opq": b"",
    "var/cache/b": b"b",
}
EXPECTED = {"bin/sh": b"#!shell", "etc/os-release": b"top", "var/cache/b": b"b"}


def blob(image: Path, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    (image / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (image / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def oci_layout(image: Path) -> Path:
    """An OCI image layout with two layers: gzip-compressed base, uncompressed top."""
    image.mkdir()
    (image / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    layers = [
        {
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            **blob(image, gzip.compress(layer_tar(BASE))),
        },
        {"mediaType": "application/vnd.oci.image.layer.v1.tar", **blob(image, layer_tar(TOP))},
    ]
    config = {"mediaType": "application/vnd.oci.image.config.v1+json", **blob(image, b"{}")}
    manifest = json.dumps({"schemaVersion": 2, "config": config, "layers": layers}).encode()
    entry = {"mediaType": oci.MANIFEST_TYPES[0], **blob(image, manifest)}
    (image / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))
    return image


def tree(fs: MemFs, path: str = "/") -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for name in fs.names(path):
        child = path.rstrip("/") + "/" + name
        if stat.S_ISDIR(fs.stat(child).st_mode):
            out.update(tree(fs, child))
        else:
            out[child.lstrip("/")] = fs.read_file(child)
    return out


def test_oci_layout_unpacked_and_served(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = oci_layout(tmp_path / "image")
    assert oci.main([str(image), str(tmp_path / "unpacked"), "--tag", "img"]) == 0
    document = tomllib.loads(capsys.readouterr().out)
    share = validate_config(document, "<printed>").shares[0]
    lowers = [str(layer.root) for layer in share.backend.lower]
    assert lowers == [str(tmp_path / "unpacked/layers/1"), str(tmp_path / "unpacked/layers/0")]
    assert (tmp_path / "unpacked/layers/1/etc/.wh.motd").is_file()
    chain = build_chain(share.backend, share.middleware)
    try:
        fs = MemFs(chain, ROOT)
        assert tree(fs) == EXPECTED
    finally:
        chain.close()


def test_docker_save_directory(tmp_path: Path) -> None:
    image = tmp_path / "saved"
    (image / "l0").mkdir(parents=True)
    (image / "l1").mkdir()
    (image / "l0" / "layer.tar").write_bytes(layer_tar(BASE))
    (image / "l1" / "layer.tar").write_bytes(layer_tar(TOP))
    (image / "manifest.json").write_text(json.dumps([{"Layers": ["l0/layer.tar", "l1/layer.tar"]}]))
    lowers = oci.unpack(image, tmp_path / "out")
    assert [p.name for p in lowers] == ["1", "0"]
    assert (lowers[1] / "etc" / "motd").read_bytes() == b"hello"


def test_unsafe_members_are_refused_and_modes_kept(tmp_path: Path) -> None:
    setuid = layer_tar({"usr": None, "usr/passwd": b"x"}, mode=0o4755)
    (tmp_path / "ok.tar").write_bytes(setuid)
    oci.unpack_layer(tmp_path / "ok.tar", tmp_path / "ok")
    assert stat.S_IMODE(os.stat(tmp_path / "ok/usr/passwd").st_mode) == 0o4755
    (tmp_path / "evil.tar").write_bytes(layer_tar({"../escape": b"x"}))
    with pytest.raises(tarfile.TarError):
        oci.unpack_layer(tmp_path / "evil.tar", tmp_path / "evil")
    assert not (tmp_path / "escape").exists()


def test_not_an_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert oci.main([str(tmp_path), str(tmp_path / "out")]) == 1
    assert "neither index.json" in capsys.readouterr().err
