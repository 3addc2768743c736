"""Container images flattened into one folder tree, as the customer ramdisk needs them.

Sources: a ``docker save`` tarball (legacy layout: manifest.json + <id>/layer.tar; OCI layout:
index.json + blobs/sha256/..., layers possibly gzip-compressed) or a plain rootfs folder. Layers
are applied in order with OCI whiteouts (``.wh.name`` deletes ``name`` from lower layers,
``.wh..wh..opq`` empties a folder of lower-layer content). Tarballs are untrusted: names are
checked (no absolute paths, no ``..``), nothing is written through a symlink, relative symlinks
may not climb out of the tree, device nodes are skipped, setuid/setgid bits dropped, and entry
counts and sizes are bounded.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import shutil
import stat
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from core.eif.cpio import CpioError, _check_parents, _link_stays_inside, safe_name
from core.errors import NitrodeckError

MAX_JSON = 1024 * 1024
MAX_LAYERS = 128
MAX_ENTRIES_PER_LAYER = 200_000
MAX_TOTAL_BYTES = 16 * 1024**3
COPY_CHUNK = 1024 * 1024
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


class ImageError(NitrodeckError):
    code = "ND-IMAGE"


@dataclass
class ImageConfig:
    """What the enclave needs from an image config, plus the identity used in EIF metadata."""

    cmd: list[str] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    working_dir: str = ""
    image_id: str = ""
    repo_tags: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def argv(self) -> list[str]:
        return self.entrypoint + self.cmd

    def docker_info(self) -> dict[str, Any]:
        """A minimal ``docker image inspect``-shaped object for sources without a Docker engine."""
        info: dict[str, Any] = {"Id": self.image_id, "RepoTags": list(self.repo_tags)}
        for key in ("Created", "Architecture", "Os"):
            if key in self.raw:
                info[key] = self.raw[key]
        info["Config"] = self.raw.get("config") or self.raw.get("Config") or {}
        return info


def _str_list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):  # Docker allows a shell-form string in some tools' output
        return ["/bin/sh", "-c", value]
    if not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
        raise ImageError("expected a list of strings", where=where)
    return list(value)


def parse_config(raw: bytes, repo_tags: list[str] | None = None) -> ImageConfig:
    """An image config JSON (the ``<id>.json`` / config blob of a saved image)."""
    if len(raw) > MAX_JSON:
        raise ImageError(
            f"image config is {len(raw)} bytes, over the {MAX_JSON}-byte limit", where="image config"
        )
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError; deep nesting recurses
        raise ImageError(f"image config is not JSON: {exc}", where="image config") from exc
    if not isinstance(doc, dict):
        raise ImageError("image config is not a JSON object", where="image config")
    cfg = doc.get("config") or doc.get("Config") or {}
    if not isinstance(cfg, Mapping):
        raise ImageError("image config 'config' is not an object", where="image config")
    working_dir = cfg.get("WorkingDir") or ""
    if not isinstance(working_dir, str):
        raise ImageError("WorkingDir is not a string", where="image config.config.WorkingDir")
    return ImageConfig(
        cmd=_str_list(cfg.get("Cmd"), "image config.config.Cmd"),
        entrypoint=_str_list(cfg.get("Entrypoint"), "image config.config.Entrypoint"),
        env=_str_list(cfg.get("Env"), "image config.config.Env"),
        working_dir=working_dir,
        image_id="sha256:" + hashlib.sha256(raw).hexdigest(),
        repo_tags=list(repo_tags or []),
        raw=doc,
    )


# --- applying layers ------------------------------------------------------------------------------


@dataclass
class _Budget:
    left: int = MAX_TOTAL_BYTES

    def take(self, n: int, where: str) -> None:
        self.left -= n
        if self.left < 0:
            raise ImageError(f"image is larger than the {MAX_TOTAL_BYTES}-byte limit", where=where)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _safe(name: str, where: str) -> str:
    try:
        return safe_name(name)
    except CpioError as exc:
        raise ImageError(exc.message, where=f"{where}: {name!r}") from exc


@dataclass(frozen=True)
class _Span:
    """An uncompressed layer stored in an uncompressed saved image: its bytes are ``size`` bytes of the
    image file at ``start``, so its files are copied out by the kernel (copy_file_range), not through
    two tarfile readers and a Python buffer."""

    fd: int
    start: int
    size: int


class _SpanReader(io.RawIOBase):
    """The span as a read-only, seekable file (what tarfile reads the layer's headers through)."""

    def __init__(self, span: _Span) -> None:
        super().__init__()
        self.span = span
        self.pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        view = memoryview(buf).cast("B")
        want = max(0, min(len(view), self.span.size - self.pos))
        if not want:
            return 0
        n = os.preadv(self.span.fd, [view[:want]], self.span.start + self.pos)
        self.pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.span.size}[whence]
        if base + offset < 0:
            raise OSError(errno.EINVAL, "negative seek position")
        self.pos = base + offset
        return self.pos

    def tell(self) -> int:
        return self.pos


# magic numbers of the compressions tarfile's "r:*" reads: such a layer is read through tarfile
_COMPRESSED = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd")


def _span_of(tar: tarfile.TarFile, member: tarfile.TarInfo) -> _Span | None:
    """The layer's span in the image file, when its bytes lie there as they are (else None)."""
    if not isinstance(tar.fileobj, io.BufferedReader) or not member.isreg() or member.sparse is not None:
        return None
    try:
        fd = tar.fileobj.fileno()
        head = os.pread(fd, 6, member.offset_data)
    except (OSError, ValueError, AttributeError):
        return None
    if any(head.startswith(magic) for magic in _COMPRESSED):
        return None
    return _Span(fd, member.offset_data, member.size)


def _copy_span(span: _Span, offset: int, size: int, out_fd: int) -> None:
    """``size`` bytes at ``offset`` of the span into ``out_fd`` (at its position): copy_file_range, or
    pread/write where the file systems cannot."""
    if offset < 0 or offset + size > span.size:
        raise tarfile.ReadError("unexpected end of data")
    pos, left = span.start + offset, size
    while left:
        try:
            n = os.copy_file_range(span.fd, out_fd, left, pos)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM):
                raise
            n = 0
            while left:  # this file system pair does not do it: copy through a buffer
                block = os.pread(span.fd, min(COPY_CHUNK, left), pos)
                if not block:
                    raise tarfile.ReadError("unexpected end of data") from None
                view = memoryview(block)
                while view:
                    view = view[os.write(out_fd, view) :]
                pos, left = pos + len(block), left - len(block)
            return
        if n == 0:
            raise tarfile.ReadError("unexpected end of data")
        pos, left = pos + n, left - n


def apply_layer(
    layer: IO[bytes], dest: Path, where: str, budget: _Budget | None = None, *, span: _Span | None = None
) -> None:
    """Apply one layer tar (plain or gzip) on top of ``dest``. ``span``: the layer's bytes as they lie in
    the image file (``layer`` is not read then; files are copied from the span)."""
    budget = budget or _Budget()
    if span is not None:
        layer = io.BufferedReader(_SpanReader(span), COPY_CHUNK)
    try:
        tar = tarfile.open(fileobj=layer, mode="r:*")  # noqa: SIM115 - closed by the with below
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ImageError(f"layer is not a tar archive: {exc}", where=where) from exc
    with tar:
        members: list[tarfile.TarInfo] = []
        try:
            for member in tar:
                members.append(member)
                if len(members) > MAX_ENTRIES_PER_LAYER:
                    raise ImageError(f"layer has more than {MAX_ENTRIES_PER_LAYER} entries", where=where)
        except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
            raise ImageError(f"layer tar is corrupt: {exc}", where=where) from exc
        # whiteouts hide lower layers only, so apply them all before this layer's own content
        for member in members:
            rel = _safe(member.name, where)
            base = os.path.basename(rel)
            parent = os.path.dirname(rel)
            if base == OPAQUE:
                folder = dest / parent
                _guard(dest, parent + "/x" if parent else "x", where)
                if folder.is_dir() and not folder.is_symlink():
                    for child in list(folder.iterdir()):
                        _remove(child)
            elif base.startswith(WHITEOUT):
                victim_rel = f"{parent}/{base[len(WHITEOUT) :]}" if parent else base[len(WHITEOUT) :]
                victim_rel = _safe(victim_rel, where)
                _guard(dest, victim_rel, where)
                _remove(dest / victim_rel)
        for member in members:
            rel = _safe(member.name, where)
            if not rel or os.path.basename(rel).startswith(WHITEOUT):
                continue
            _extract_member(tar, member, rel, dest, where, budget, span)


def _guard(dest: Path, rel: str, where: str) -> None:
    try:
        _check_parents(dest, rel, rel)
    except CpioError as exc:
        raise ImageError(exc.message, where=f"{where}: {rel!r}") from exc


def _extract_member(
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    rel: str,
    dest: Path,
    where: str,
    budget: _Budget,
    span: _Span | None = None,
) -> None:
    _guard(dest, rel, where)
    target = dest / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    perm = member.mode & 0o7777 & ~0o6000  # never create setuid/setgid files on the host
    if member.isdir():
        if target.is_symlink() or (target.exists() and not target.is_dir()):
            _remove(target)
        target.mkdir(exist_ok=True)
        os.chmod(target, perm | 0o700)
        return
    if target.is_symlink() or target.exists():
        _remove(target)
    if member.issym():
        if not _link_stays_inside(rel, member.linkname):
            raise ImageError(
                f"symlink to {member.linkname!r} points outside the image", where=f"{where}: {rel!r}"
            )
        os.symlink(member.linkname, target)
    elif member.islnk():
        source_rel = _safe(member.linkname, where)
        _guard(dest, source_rel, where)
        source = dest / source_rel
        if not source.is_file() or source.is_symlink():
            raise ImageError(f"hard link to missing file {member.linkname!r}", where=f"{where}: {rel!r}")
        budget.take(source.stat().st_size, where)
        shutil.copyfile(source, target, follow_symlinks=False)
        os.chmod(target, stat.S_IMODE(source.stat().st_mode))
    elif member.isfile():
        budget.take(member.size, where)
        src = None
        if span is None or member.sparse is not None:  # (a sparse file's data is not one range)
            src = tar.extractfile(member)
            if src is None:
                raise ImageError("unreadable file entry", where=f"{where}: {rel!r}")
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            try:
                if src is not None:
                    shutil.copyfileobj(src, out, COPY_CHUNK)
                elif span is not None:
                    _copy_span(span, member.offset_data, member.size, fd)
            except (tarfile.TarError, OSError, EOFError) as exc:
                raise ImageError(f"layer data is corrupt: {exc}", where=f"{where}: {rel!r}") from exc
        os.chmod(target, perm)
    # device nodes, fifos: skipped on purpose (never created on the host)


# --- saved images ---------------------------------------------------------------------------------


def _read_json(tar: tarfile.TarFile, name: str) -> Any:
    raw = _read_bytes(tar, name)
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError; deep nesting recurses
        raise ImageError(f"{name} is not JSON: {exc}", where=name) from exc


def _read_bytes(tar: tarfile.TarFile, name: str) -> bytes:
    try:
        member = tar.getmember(name)
    except KeyError:
        raise ImageError(f"{name} missing from the image tarball", where=name) from None
    if member.size > MAX_JSON:
        raise ImageError(f"{name} is over the {MAX_JSON}-byte limit", where=name)
    fh = tar.extractfile(member)
    if fh is None:
        raise ImageError(f"{name} is not a file", where=name)
    return fh.read()


def _blob(digest: Any, where: str) -> str:
    if not isinstance(digest, str) or not digest.startswith("sha256:") or len(digest) != 71:
        raise ImageError(f"bad digest {digest!r}", where=where)
    hexpart = digest[7:]
    if any(c not in "0123456789abcdef" for c in hexpart):
        raise ImageError(f"bad digest {digest!r}", where=where)
    return f"blobs/sha256/{hexpart}"


def _oci_manifest(tar: tarfile.TarFile) -> tuple[str, list[str], list[str]]:
    """(config blob, layer blobs, repo tags) from an OCI layout's index.json (one nested index allowed)."""
    doc = _read_json(tar, "index.json")
    tags: list[str] = []
    for _ in range(4):  # index -> (index ->) manifest
        manifests = doc.get("manifests") if isinstance(doc, dict) else None
        if not isinstance(manifests, list) or not manifests or not isinstance(manifests[0], dict):
            raise ImageError("index.json has no manifests", where="index.json")
        first = manifests[0]
        ann = first.get("annotations") or {}
        if isinstance(ann, dict) and isinstance(ann.get("io.containerd.image.name"), str):
            tags.append(ann["io.containerd.image.name"].rsplit("/", 1)[-1])
        elif isinstance(ann, dict) and isinstance(ann.get("org.opencontainers.image.ref.name"), str):
            tags.append(ann["org.opencontainers.image.ref.name"])
        doc = _read_json(tar, _blob(first.get("digest"), "index.json"))
        if isinstance(doc, dict) and "layers" in doc:
            break
    if (
        not isinstance(doc, dict)
        or not isinstance(doc.get("layers"), list)
        or not isinstance(doc.get("config"), dict)
    ):
        raise ImageError("OCI manifest has no config/layers", where="index.json")
    layers = [
        _blob(layer.get("digest") if isinstance(layer, dict) else None, "manifest.layers")
        for layer in doc["layers"]
    ]
    return _blob(doc["config"].get("digest"), "manifest.config"), layers, tags


def _docker_manifest(tar: tarfile.TarFile) -> tuple[str, list[str], list[str]]:
    doc = _read_json(tar, "manifest.json")
    if not isinstance(doc, list) or not doc or not isinstance(doc[0], dict):
        raise ImageError("manifest.json should be a non-empty list of objects", where="manifest.json")
    first = doc[0]
    config, layers, tags = first.get("Config"), first.get("Layers"), first.get("RepoTags") or []
    if (
        not isinstance(config, str)
        or not isinstance(layers, list)
        or not all(isinstance(x, str) for x in layers)
    ):
        raise ImageError("manifest.json lacks Config/Layers", where="manifest.json")
    if not isinstance(tags, list):
        tags = []
    return config, list(layers), [t for t in tags if isinstance(t, str)]


def flatten_tarball(tarball: Path, dest: Path) -> ImageConfig:
    """Apply every layer of a saved image (Docker or OCI layout) into ``dest``; return its config."""
    try:
        tar = tarfile.open(tarball, mode="r:*")  # noqa: SIM115 - closed by the with below
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ImageError(f"cannot open image tarball: {exc}", where=str(tarball)) from exc
    with tar:
        try:
            names = set(tar.getnames())
        except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
            raise ImageError(f"image tarball is corrupt: {exc}", where=str(tarball)) from exc
        if "manifest.json" in names:
            config_name, layers, tags = _docker_manifest(tar)
        elif "index.json" in names:
            config_name, layers, tags = _oci_manifest(tar)
        else:
            raise ImageError(
                "neither manifest.json nor index.json: not a docker save/OCI tarball", where=str(tarball)
            )
        if len(layers) > MAX_LAYERS:
            raise ImageError(
                f"image has {len(layers)} layers, over the {MAX_LAYERS} limit", where=str(tarball)
            )
        config = parse_config(_read_bytes(tar, config_name), tags)
        dest.mkdir(parents=True, exist_ok=True)
        budget = _Budget()
        for idx, name in enumerate(layers):
            try:
                member = tar.getmember(name)
            except KeyError:
                raise ImageError(f"layer {name} missing from the tarball", where=f"layer {idx}") from None
            fh = tar.extractfile(member)
            if fh is None:
                raise ImageError(f"layer {name} is not a file", where=f"layer {idx}")
            apply_layer(fh, dest, f"layer {idx} ({name})", budget, span=_span_of(tar, member))
        return config
