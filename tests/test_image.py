"""Image flattening: docker save (legacy) and OCI layouts, whiteouts, hostile layers, config."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.eif.image import ImageError, apply_layer, flatten_tarball, parse_config

CONFIG = {
    "architecture": "amd64",
    "os": "linux",
    "created": "2024-01-01T00:00:00Z",
    "config": {
        "Entrypoint": ["/bin/app"],
        "Cmd": ["--serve", "8000"],
        "Env": ["PATH=/bin", "MODE=test"],
        "WorkingDir": "/srv",
    },
}


def layer(entries: list[tuple[str, str, bytes | str]]) -> bytes:
    """A layer tar: (kind, name, payload) with kind file/dir/sym/link."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for kind, name, payload in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 12345
            if kind == "file":
                data = payload if isinstance(payload, bytes) else payload.encode()
                info.size, info.mode = len(data), 0o755 if name.startswith("bin/") else 0o644
                tar.addfile(info, io.BytesIO(data))
            elif kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, str(payload)
                tar.addfile(info)
            elif kind == "link":
                info.type, info.linkname = tarfile.LNKTYPE, str(payload)
                tar.addfile(info)
    return buf.getvalue()


LAYERS = [
    layer(
        [
            ("dir", "bin", ""),
            ("file", "bin/app", "v1"),
            ("dir", "etc", ""),
            ("file", "etc/old.conf", "old"),
            ("file", "etc/keep.conf", "keep"),
            ("dir", "var/cache", ""),
            ("file", "var/cache/a", "a"),
            ("file", "var/cache/b", "b"),
        ]
    ),
    layer(
        [
            ("file", "bin/app", "v2"),
            ("file", "etc/.wh.old.conf", ""),
            ("file", "var/cache/c", "c-new"),  # same layer as the opaque marker: survives it
            ("file", "var/cache/.wh..wh..opq", ""),
            ("sym", "bin/sh", "/bin/app"),
            ("link", "bin/app-hard", "bin/app"),
        ]
    ),
]


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def legacy_tarball(path: Path, layers: list[bytes], config: dict = CONFIG) -> Path:  # type: ignore[type-arg]
    cfg = json.dumps(config).encode()
    cfg_name = hashlib.sha256(cfg).hexdigest() + ".json"
    with tarfile.open(path, "w") as tar:
        names = []
        for i, data in enumerate(layers):
            names.append(f"{i:064x}/layer.tar")
            _add(tar, names[-1], data)
        _add(tar, cfg_name, cfg)
        manifest = [{"Config": cfg_name, "RepoTags": ["demo:1.0"], "Layers": names}]
        _add(tar, "manifest.json", json.dumps(manifest).encode())
    return path


def oci_tarball(path: Path, layers: list[bytes], nested: bool = False) -> Path:
    def digest(data: bytes) -> str:
        return "sha256:" + hashlib.sha256(data).hexdigest()

    blobs: dict[str, bytes] = {}
    layer_descs = []
    for data in layers:
        gz = gzip.compress(data, mtime=0)  # OCI layers are usually compressed
        blobs[digest(gz)] = gz
        layer_descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest(gz)})
    cfg = json.dumps(CONFIG).encode()
    blobs[digest(cfg)] = cfg
    manifest = json.dumps({"config": {"digest": digest(cfg)}, "layers": layer_descs}).encode()
    blobs[digest(manifest)] = manifest
    top = {
        "manifests": [
            {"digest": digest(manifest), "annotations": {"org.opencontainers.image.ref.name": "1.0"}}
        ]
    }
    if nested:
        inner = json.dumps(top).encode()
        blobs[digest(inner)] = inner
        top = {"manifests": [{"digest": digest(inner)}]}
    with tarfile.open(path, "w") as tar:
        _add(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        _add(tar, "index.json", json.dumps(top).encode())
        for d, data in blobs.items():
            _add(tar, "blobs/sha256/" + d[7:], data)
    return path


def check_flattened(root: Path) -> None:
    assert (root / "bin/app").read_text() == "v2"
    assert (root / "bin/app-hard").read_text() == "v2"
    assert os.readlink(root / "bin/sh") == "/bin/app"
    assert not (root / "etc/old.conf").exists()
    assert (root / "etc/keep.conf").read_text() == "keep"
    assert sorted(p.name for p in (root / "var/cache").iterdir()) == ["c"]
    assert not any(p.name.startswith(".wh.") for p in root.rglob("*"))
    assert os.stat(root / "bin/app").st_mode & 0o111


@pytest.mark.parametrize("layout", ["legacy", "oci", "oci-nested"])
def test_flatten_with_whiteouts(tmp_path: Path, layout: str) -> None:
    tarball = tmp_path / "img.tar"
    if layout == "legacy":
        legacy_tarball(tarball, LAYERS)
    else:
        oci_tarball(tarball, LAYERS, nested=layout == "oci-nested")
    config = flatten_tarball(tarball, tmp_path / "root")
    check_flattened(tmp_path / "root")
    assert config.argv == ["/bin/app", "--serve", "8000"]
    assert config.env == ["PATH=/bin", "MODE=test"]
    assert config.working_dir == "/srv"
    assert config.image_id.startswith("sha256:") and len(config.image_id) == 71
    assert config.repo_tags == (["demo:1.0"] if layout == "legacy" else ["1.0"])
    info = config.docker_info()
    assert info["Config"]["Cmd"] == ["--serve", "8000"] and info["Id"] == config.image_id


def _expect(tmp_path: Path, entries: list[tuple[str, str, bytes | str]], text: str) -> None:
    with pytest.raises(ImageError, match=text):
        apply_layer(io.BytesIO(layer(entries)), tmp_path / "root", "layer 0")


def test_hostile_layers(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    _expect(tmp_path, [("file", "../escape", "x")], "path traversal")
    _expect(tmp_path, [("file", "/etc/abs", "x")], "absolute path")
    _expect(tmp_path, [("sym", "lnk", str(outside)), ("file", "lnk/pwned", "x")], "through a symlink")
    _expect(tmp_path, [("sym", "a/up", "../../x")], "outside the image")
    _expect(tmp_path, [("link", "h", "missing")], "hard link to missing file")
    _expect(tmp_path, [("file", "w/.wh...", "")], "path traversal")
    assert not (outside / "pwned").exists() and not (tmp_path / "escape").exists()


def test_bad_tarballs(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tar"
    with tarfile.open(bad, "w") as tar:
        _add(tar, "hello.txt", b"x")
    with pytest.raises(ImageError, match="neither manifest.json nor index.json"):
        flatten_tarball(bad, tmp_path / "r")
    with tarfile.open(bad, "w") as tar:
        _add(tar, "manifest.json", b"{not json")
    with pytest.raises(ImageError, match="not JSON"):
        flatten_tarball(bad, tmp_path / "r")
    with tarfile.open(bad, "w") as tar:
        _add(
            tar, "manifest.json", json.dumps([{"Config": "c.json", "Layers": ["missing/layer.tar"]}]).encode()
        )
        _add(tar, "c.json", b"{}")
    with pytest.raises(ImageError, match="missing from the tarball"):
        flatten_tarball(bad, tmp_path / "r")
    (tmp_path / "garbage.tar").write_bytes(b"\0garbage" * 10)
    with pytest.raises(ImageError):
        flatten_tarball(tmp_path / "garbage.tar", tmp_path / "r")


def test_parse_config_errors() -> None:
    with pytest.raises(ImageError, match="list of strings"):
        parse_config(json.dumps({"config": {"Cmd": [1, 2]}}).encode())
    with pytest.raises(ImageError, match="over the"):
        parse_config(b" " * (1024 * 1024 + 1))
    assert parse_config(b"{}").argv == []


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 4000), st.binary(min_size=1, max_size=64))
def test_fuzz_layers_only_typed_errors(
    tmp_path_factory: pytest.TempPathFactory, cut: int, noise: bytes
) -> None:
    base = LAYERS[1]
    data = base[:cut] + noise + base[cut + len(noise) :]
    dest = tmp_path_factory.mktemp("fz")
    try:
        apply_layer(io.BytesIO(data), dest, "layer 0")
    except ImageError:
        pass


_JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=6)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.sampled_from(["config", "Config", "Cmd", "Entrypoint", "Env", "WorkingDir", "x"]), inner
        ),
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(st.one_of(_JSON.map(lambda v: json.dumps(v).encode()), st.binary(max_size=80)))
def test_fuzz_parse_config_only_typed_errors(raw: bytes) -> None:
    try:
        cfg = parse_config(raw)
    except ImageError:
        return
    assert all(isinstance(a, str) for a in cfg.argv + cfg.env)


def test_deeply_nested_config_is_typed() -> None:
    with pytest.raises(ImageError, match="not JSON"):
        parse_config(b"[" * 50_000 + b"]" * 50_000)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 1 << 20), st.binary(min_size=1, max_size=32), st.booleans())
def test_fuzz_saved_image_only_typed_errors(
    tmp_path_factory: pytest.TempPathFactory, at: int, noise: bytes, truncate: bool
) -> None:
    work = tmp_path_factory.mktemp("fzimg")
    base = legacy_tarball(work / "base.tar", LAYERS).read_bytes()
    at %= len(base)
    data = base[:at] if truncate else base[:at] + noise + base[at + len(noise) :]
    (work / "m.tar").write_bytes(data)
    try:
        flatten_tarball(work / "m.tar", work / "root")
    except ImageError:
        pass
