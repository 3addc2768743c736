"""build-enclave: an image (Docker, saved tarball or rootfs folder) -> a reproducible EIF.

Ramdisks follow nitro-cli: ramdisk 0 (bootstrap) = init + nsm.ko; ramdisk 1 (customer) =
``rootfs/...`` (the flattened image), ``cmd`` (entrypoint + cmd, one argument per line) and ``env``
(one K=V per line). Everything that varies between hosts (mtimes, owners, creation order) is
dropped, so the same inputs and the same build time give a bit-identical EIF.

Errors are :class:`BuildError` with ``cli_code`` set to the nitro-cli code the emulator prints:
E19 unreadable input, E48 EIF building, E49 docker build, E50 missing image / pull, E60 signing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import shlex
import shutil
import stat
import struct
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import core
from core.eif import cpio
from core.eif.blobs import Blobs, load_blobs
from core.eif.format import (
    CRC_COVERED,
    SECTION_HEADER_FORMAT,
    SECTION_HEADER_SIZE,
    EifError,
    EifFile,
    EifWriter,
    Reserved,
    SectionType,
    read_eif,
    read_eif_fd,
)
from core.eif.image import ImageConfig, ImageError, flatten_tarball
from core.eif.measure import finalize
from core.eif.stream import Crc32, DigestingWriter, OutputFailed, crc32_combine
from core.errors import NitrodeckError
from core.files import OutputBusy, atomic_output, check_output_target, open_regular, output_lock, pid_alive
from core.models import BuildRequest, BuildResult, Measurements

MAX_CUSTOM_METADATA = 4096
MAX_SPEC_FILE = 1024 * 1024
BUILD_TOOL = "nitrodeck"

Progress = Callable[[str], None]


class BuildError(NitrodeckError):
    code = "ND-BUILD"

    def __init__(
        self,
        message: str,
        *,
        cli_code: str,
        where: str | None = None,
        hint: str | None = None,
        cli_info: list[str] | None = None,
    ) -> None:
        super().__init__(message, where=where, hint=hint)
        self.cli_code = cli_code
        #: nitro-cli's parameters of the [ Exx ] line, e.g. [path, "Open"] for E19's file line
        self.cli_info = cli_info or []


@dataclass
class ImageSpec:
    """What the enclave runs: the unpacked root filesystem and its command/environment."""

    rootfs: Path
    cmd: list[str]
    env: list[str]


@dataclass
class _Source:
    root: Path
    config: ImageConfig
    docker_info: dict[str, Any]
    default_name: str
    default_version: str | None  # None: derive from the customer ramdisk


# --- time -----------------------------------------------------------------------------------------


#: SOURCE_DATE_EPOCH up to 9999-12-31T23:59:59Z (datetime's range)
_MAX_EPOCH = 253402300799
_MAX_BUILD_TIME = 64


def check_build_time(value: str) -> str:
    """An explicit BuildTime must be an RFC 3339 time (it is written as-is into the metadata)."""
    try:
        ok = 0 < len(value) <= _MAX_BUILD_TIME and "T" in value.upper()
        parsed = dt.datetime.fromisoformat(value) if ok else None
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise BuildError(
            f"not an RFC 3339 time with a zone: {value[:80]!r}",
            cli_code="E48",
            where="--build-time",
            hint="e.g. 2025-01-02T03:04:05Z or 2025-01-02T03:04:05+00:00",
        )
    return value


def rfc3339_auto_si(ns: int) -> str:
    """chrono's ``to_rfc3339()`` (SecondsFormat::AutoSi): 0, 3, 6 or 9 fraction digits, ``+00:00``."""
    seconds, frac = divmod(ns, 1_000_000_000)
    text = dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if frac:
        digits = f"{frac:09d}"
        for width in (3, 6, 9):
            if int(digits[width:] or "0") == 0:
                text += "." + digits[:width]
                break
    return text + "+00:00"


def resolve_build_time(build_time: str | None) -> str:
    """The explicit value, else $SOURCE_DATE_EPOCH as RFC 3339, else now (as nitro-cli's to_rfc3339)."""
    if build_time is not None:
        return check_build_time(build_time)
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        # the reproducible-builds spec: a decimal integer, as `date +%s` prints it
        if not (epoch.isascii() and epoch.isdigit() and len(epoch) <= 12 and int(epoch) <= _MAX_EPOCH):
            raise BuildError(
                f"SOURCE_DATE_EPOCH is not a non-negative integer up to {_MAX_EPOCH}: {epoch[:40]!r}",
                cli_code="E48",
                where="SOURCE_DATE_EPOCH",
            )
        return rfc3339_auto_si(int(epoch) * 1_000_000_000)
    return rfc3339_auto_si(time.time_ns())


# --- sources --------------------------------------------------------------------------------------


def _docker_source(req: BuildRequest, client: Any, work: Path, progress: Progress) -> _Source:
    assert req.docker_uri is not None
    try:
        import docker.errors as derr
    except ImportError as exc:  # pragma: no cover - docker is a dependency
        raise BuildError("the docker SDK is not installed", cli_code="E50") from exc
    if client is None:
        try:
            import docker

            client = docker.from_env(timeout=120)
            client.ping()
        except Exception as exc:  # noqa: BLE001 - any failure: no usable engine
            # nitro-cli meets the engine first in build_docker_image (E49) or pull_docker_image (E50)
            raise BuildError(
                f"cannot reach the Docker engine: {exc}", cli_code="E49" if req.docker_dir else "E50",
                where="DOCKER_HOST",
            ) from None
    uri = req.docker_uri
    if req.docker_dir:
        folder = Path(req.docker_dir)
        if not (folder / "Dockerfile").is_file():
            raise BuildError("no Dockerfile in the docker dir", cli_code="E49", where=str(folder))
        try:
            client.images.build(path=str(folder), tag=uri, rm=True, network_mode="none")
        except (derr.BuildError, derr.APIError) as exc:
            raise BuildError(f"docker build failed: {exc}", cli_code="E49", where=str(folder)) from None
    try:
        image = client.images.get(uri)
        if not req.docker_dir:
            progress("Using the locally available Docker image...")
    except derr.ImageNotFound:
        try:
            image = client.images.pull(uri)
        except Exception as exc:  # noqa: BLE001 - not found, no network, bad name: all E50
            raise BuildError(
                f"image {uri} is not available locally and cannot be pulled: {exc}", cli_code="E50", where=uri
            ) from None
    except derr.APIError as exc:
        raise BuildError(f"cannot inspect image {uri}: {exc}", cli_code="E50", where=uri) from None
    tarball = work / "image.tar"
    try:
        with open(tarball, "wb") as out:
            for chunk in image.save(named=False):
                out.write(chunk)
    except derr.APIError as exc:
        raise BuildError(f"docker save failed: {exc}", cli_code="E50", where=uri) from None
    root = work / "rootfs"
    try:
        config = flatten_tarball(tarball, root)
    except ImageError as exc:
        raise BuildError(
            f"cannot flatten image {uri}: {exc.message}", cli_code="E48", where=exc.where
        ) from None
    finally:
        tarball.unlink(missing_ok=True)
    info = dict(image.attrs)
    # LastTagTime changes whenever the tag is (re)applied, e.g. by every --docker-dir build; it is
    # not part of the image, and keeping it would make identical builds differ
    meta = info.get("Metadata")
    if isinstance(meta, dict) and "LastTagTime" in meta:
        info["Metadata"] = {k: v for k, v in meta.items() if k != "LastTagTime"}
    # the engine's inspect Config is authoritative for what runs
    cfg = info.get("Config") or {}
    config.cmd = list(cfg.get("Cmd") or [])
    config.entrypoint = list(cfg.get("Entrypoint") or [])
    config.env = list(cfg.get("Env") or [])
    config.working_dir = cfg.get("WorkingDir") or ""
    image_id = str(info.get("Id") or config.image_id)
    return _Source(root, config, info, uri.split(":")[0], image_id.removeprefix("sha256:"))


def _tar_source(req: BuildRequest, work: Path) -> _Source:
    assert req.image_tar is not None
    tarball = Path(req.image_tar)
    if not os.access(tarball, os.R_OK) or not tarball.is_file():
        raise BuildError("the image tarball cannot be read", cli_code="E19", where=str(tarball))
    root = work / "rootfs"
    try:
        config = flatten_tarball(tarball, root)
    except ImageError as exc:
        raise BuildError(f"bad image tarball: {exc.message}", cli_code="E48", where=exc.where) from None
    name = config.repo_tags[0].split(":")[0] if config.repo_tags else tarball.name.split(".")[0]
    return _Source(root, config, config.docker_info(), name, config.image_id.removeprefix("sha256:"))


def _rootfs_source(req: BuildRequest) -> _Source:
    assert req.rootfs is not None
    root = Path(req.rootfs)
    if not root.is_dir() or not os.access(root, os.R_OK | os.X_OK):
        raise BuildError("the rootfs folder cannot be read", cli_code="E19", where=str(root))
    try:
        argv = shlex.split(req.cmd or "")
    except ValueError as exc:
        raise BuildError(f"cannot split the command: {exc}", cli_code="E48", where="--cmd") from None
    config = ImageConfig(cmd=argv, env=list(req.env), repo_tags=[])
    info = {"Id": "", "RepoTags": [], "Config": {"Cmd": argv, "Env": list(req.env)}}
    return _Source(root, config, info, root.name or "rootfs", None)


def _check_lines(values: list[str], what: str, need_eq: bool) -> None:
    for value in values:
        if "\n" in value or "\0" in value:
            raise BuildError(f"{what} entry {value!r} contains a newline or NUL", cli_code="E48", where=what)
        if need_eq and "=" not in value:
            raise BuildError(f"{what} entry {value!r} is not K=V", cli_code="E48", where=what)


# --- ramdisks -------------------------------------------------------------------------------------


def _bootstrap_entries(blobs: Blobs) -> Iterator[cpio.CpioEntry]:
    yield cpio.regular("init", blobs.init, 0o755)
    if blobs.nsm_ko is not None:
        yield cpio.regular("nsm.ko", blobs.nsm_ko, 0o644)


def _customer_entries(source: _Source) -> Iterator[cpio.CpioEntry]:
    yield from cpio.tree_entries(source.root, "rootfs")
    yield cpio.regular("cmd", "".join(f"{arg}\n" for arg in source.config.argv).encode(), 0o644)
    yield cpio.regular("env", "".join(f"{kv}\n" for kv in source.config.env).encode(), 0o644)


def _bootstrap_ramdisk(blobs: Blobs, mtime: int) -> bytes:
    """Ramdisk 0 (init, nsm.ko: a few MB), in memory."""
    buf = io.BytesIO()
    try:
        cpio.write_archive(buf, _bootstrap_entries(blobs), mtime=mtime)
    except cpio.CpioError as exc:
        raise BuildError(f"cannot write ramdisk: {exc}", cli_code="E48", where=exc.where) from None
    except OSError as exc:
        raise BuildError(f"cannot read image file: {exc}", cli_code="E19", where=exc.filename) from None
    return buf.getvalue()


def _plan_customer(source: _Source) -> tuple[list[cpio.CpioEntry], int]:
    """Ramdisk 1's entries in archive order and its exact size (the walk of the image's tree)."""
    try:
        return cpio.plan_archive(_customer_entries(source))
    except cpio.CpioError as exc:
        raise BuildError(f"cannot write ramdisk: {exc}", cli_code="E48", where=exc.where) from None
    except OSError as exc:
        raise BuildError(f"cannot read image file: {exc}", cli_code="E19", where=exc.filename) from None


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _write_eif(
    fd: int,
    blobs: Blobs,
    rd0: bytes,
    customer: list[cpio.CpioEntry],
    customer_size: int,
    metadata: Callable[[str | None], bytes],
    want_digest: bool,
    mtime: int,
) -> Measurements:
    """Write the EIF into ``fd`` in one pass over the image and return its PCRs.

    The layout is fixed first (every section's size is known: the customer ramdisk's from the walk,
    the metadata's with a placeholder of the digest's length), the small sections are written, and the
    customer ramdisk is streamed into its place while PCR0, PCR2, the CRC and (``want_digest``: it is
    the ImageVersion of a rootfs build) its SHA-256 are computed from the very bytes written. Then the
    metadata and the header (its CRC joined from the pieces' with crc32_combine) are written in place.
    Nothing is read back: the same bytes an EifWriter writes and measure() measures (tests/test_build.py).
    """
    kernel = blobs.kernel.read_bytes()
    placeholder = metadata("0" * 64 if want_digest else None)
    writer = EifWriter(flags=blobs.eif_flags)
    writer.add(SectionType.KERNEL, kernel).add(SectionType.CMDLINE, blobs.cmdline)
    writer.add(SectionType.METADATA, placeholder).add(SectionType.RAMDISK, rd0)
    writer.add(SectionType.RAMDISK, Reserved(customer_size))
    header = writer.header()
    offsets = header.section_offsets
    heads = [struct.pack(SECTION_HEADER_FORMAT, int(kind), 0, size) for (kind, _), size in zip(
        writer.sections, header.section_sizes, strict=False)]
    small: list[bytes] = [kernel, blobs.cmdline, placeholder, rd0]
    for index, data in enumerate(small):
        _pwrite_all(fd, heads[index] + data, offsets[index])
    _pwrite_all(fd, heads[4], offsets[4])

    pcr0 = hashlib.sha384()
    for data in (kernel, blobs.cmdline, rd0):  # the measured sections before the customer ramdisk, in order
        pcr0.update(data)
    pcr1 = pcr0.copy()
    pcr2 = hashlib.sha384()
    crc = Crc32()
    sha256 = hashlib.sha256()
    updates = [pcr0.update, pcr2.update, crc.update] + ([sha256.update] if want_digest else [])
    with DigestingWriter(fd, offsets[4] + SECTION_HEADER_SIZE, updates, writeback=True) as stream:
        try:
            cpio.stream_archive(stream, customer, mtime=mtime)
        except cpio.CpioError as exc:
            raise BuildError(f"cannot write ramdisk: {exc}", cli_code="E48", where=exc.where) from None
        except OutputFailed:
            raise
        except OSError as exc:  # reading the image's files (writes fail as OutputFailed)
            raise BuildError(f"cannot read image file: {exc}", cli_code="E19", where=exc.filename) from None
    if stream.written != customer_size:
        raise EifError(
            f"the customer ramdisk is {stream.written} bytes, planned {customer_size}",
            offset=offsets[4],
            problem="truncated",
        )
    final = metadata(sha256.hexdigest() if want_digest else None)
    if len(final) != len(placeholder):
        raise EifError("the metadata changed size once the ramdisk digest was known", offset=offsets[2],
                       problem="bad metadata")
    _pwrite_all(fd, final, offsets[2] + SECTION_HEADER_SIZE)
    small[2] = final
    value = zlib.crc32(header.pack()[:CRC_COVERED])
    for index, data in enumerate(small):
        value = zlib.crc32(data, zlib.crc32(heads[index], value))
    value = crc32_combine(zlib.crc32(heads[4], value), crc.value, customer_size)
    _pwrite_all(fd, writer.header(crc=value).pack(), 0)
    return Measurements(pcr0=finalize(pcr0), pcr1=finalize(pcr1), pcr2=finalize(pcr2), pcr8=None)


def _custom_metadata(path: str | None) -> Any:
    if not path:
        return None
    try:
        with os.fdopen(open_regular(path, where="--metadata"), "rb") as fh:
            raw = fh.read(MAX_CUSTOM_METADATA + 1)
    except NitrodeckError as exc:
        raise BuildError(f"cannot read the metadata file: {exc.message}", cli_code="E19", where=path) from None
    except OSError as exc:
        raise BuildError(
            f"cannot read the metadata file: {exc.strerror}", cli_code="E19", where=path
        ) from None
    if len(raw) > MAX_CUSTOM_METADATA:
        raise BuildError(
            f"the metadata file is larger than {MAX_CUSTOM_METADATA} bytes", cli_code="E48", where=path
        )
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError; deep nesting recurses
        raise BuildError(f"the metadata file is not JSON: {exc}", cli_code="E48", where=path) from None


def _check_output(path: Path) -> None:
    """nitro-cli opens the output file before anything else is built (lib.rs build_from_docker):
    a folder that is missing or not writable is E19 with the file and 'Open'."""
    parent = path.absolute().parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise BuildError(
            "Could not create output file: the folder does not exist or is not writable",
            cli_code="E19",
            where=str(parent),
            cli_info=[str(path), "Open"],
        )
    try:
        check_output_target(path, where="--output-file")
    except NitrodeckError as exc:
        raise BuildError(exc.message, cli_code="E48", where=str(path), hint=exc.hint) from None


WORK_PREFIX = "nd-build-"


def clean_stale_work_dirs(folder: str | None = None) -> list[Path]:
    """Remove build folders (``nd-build-<pid>-*``) that builds killed with SIGKILL left behind."""
    base = Path(folder or tempfile.gettempdir())
    removed: list[Path] = []
    try:
        names = os.listdir(base)
    except OSError:
        return removed
    for name in names:
        if not name.startswith(WORK_PREFIX):
            continue
        pid_text = name[len(WORK_PREFIX) :].split("-", 1)[0]
        if not pid_text.isdigit() or pid_alive(int(pid_text)):
            continue
        path = base / name
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


# --- the build ------------------------------------------------------------------------------------


def build_eif(
    req: BuildRequest,
    *,
    docker_client: Any = None,
    build_time: str | None = None,
    progress: Progress | None = None,
) -> BuildResult:
    """Build ``req.output_file``; same request + same build time => bit-identical EIF."""
    say = progress or (lambda _line: None)
    sources = [s for s in (req.docker_uri, req.rootfs, req.image_tar) if s]
    if len(sources) != 1:
        raise BuildError(
            "give exactly one image source: docker URI, rootfs folder or image tarball", cli_code="E48"
        )
    if bool(req.signing_certificate) != bool(req.private_key):
        raise BuildError("signing needs both a certificate and a private key", cli_code="E60")
    # nitro-cli says this before it looks at anything (lib.rs build_enclaves)
    say("Start building the Enclave Image...")
    output = Path(req.output_file)
    _check_output(output)
    custom = _custom_metadata(req.metadata)
    when = resolve_build_time(build_time)
    blobs = load_blobs()
    clean_stale_work_dirs()
    try:
        # two builds to one output at once: the second is refused instead of both reporting success
        with output_lock(output.absolute()):
            measurements = _build_locked(req, docker_client, output, custom, when, blobs, say)
    except OutputBusy as exc:
        raise BuildError(exc.message, cli_code="E48", where=str(output), hint=exc.hint) from None
    say("Enclave Image successfully created.")
    return BuildResult(measurements=measurements, output_file=str(output))


def _build_locked(
    req: BuildRequest,
    docker_client: Any,
    output: Path,
    custom: Any,
    when: str,
    blobs: Blobs,
    say: Progress,
) -> Any:
    with tempfile.TemporaryDirectory(prefix=f"{WORK_PREFIX}{os.getpid()}-") as tmp:
        work = Path(tmp)
        if req.docker_uri:
            source = _docker_source(req, docker_client, work, say)
        elif req.image_tar:
            source = _tar_source(req, work)
        else:
            source = _rootfs_source(req)
        if not source.config.argv:
            raise BuildError("the image has no CMD or ENTRYPOINT to run", cli_code="E48", where="cmd")
        _check_lines(source.config.argv, "cmd", need_eq=False)
        _check_lines(source.config.env, "env", need_eq=True)
        # cpio mtimes stay 0: the build time lives in the metadata only, so PCRs do not depend on it
        mtime = 0
        rd0 = _bootstrap_ramdisk(blobs, mtime)
        customer, customer_size = _plan_customer(source)
        os_name, kernel_version = blobs.os_and_kernel()
        version = req.version or source.default_version

        def metadata(customer_digest: str | None) -> bytes:
            doc = {
                "ImageName": req.name or source.default_name,
                "ImageVersion": version or customer_digest,
                "BuildMetadata": {
                    "BuildTime": when,
                    "BuildTool": BUILD_TOOL,
                    "BuildToolVersion": core.__version__,
                    "OperatingSystem": os_name,
                    "KernelVersion": kernel_version,
                },
                "DockerInfo": source.docker_info,
                "CustomMetadata": custom,
            }
            return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()

        signing = bool(req.signing_certificate and req.private_key)
        # a signed build signs a private unsigned copy into the output, so the output is written once
        target = work / "unsigned.eif" if signing else output
        try:
            with atomic_output(target, mode=0o644, where="--output-file") as out:
                fd = out.fh.fileno()
                # the PCRs of the bytes written into our own temp file, before it is renamed into place
                measurements = _write_eif(fd, blobs, rd0, customer, customer_size, metadata, not version, mtime)
                with read_eif_fd(fd, out.target) as eif:  # what we publish parses as an EIF
                    eif.check_unchanged()
        except OutputFailed as exc:
            raise BuildError(
                f"cannot write the EIF: {exc.error.strerror}", cli_code="E48", where=str(output)
            ) from None
        except OSError as exc:
            raise BuildError(
                f"cannot write the EIF: {exc.strerror}", cli_code="E48", where=str(output)
            ) from None
        except EifError as exc:
            raise BuildError(
                f"cannot write the EIF: {exc.message}", cli_code="E48", where=str(output)
            ) from None
        if signing:
            from core.eif.sign import SigningError, sign_eif

            assert req.signing_certificate and req.private_key
            try:
                measurements = sign_eif(target, req.signing_certificate, req.private_key, output=output)
            except SigningError as exc:
                raise BuildError(f"signing failed: {exc.message}", cli_code="E60", where=exc.where) from None
            except OSError as exc:
                raise BuildError(
                    f"cannot write the EIF: {exc.strerror}", cli_code="E48", where=str(output)
                ) from None
    return measurements


# --- reading back -------------------------------------------------------------------------------


def _lines(path: Path, what: str) -> list[str]:
    if not path.is_file() or path.is_symlink():
        return []
    if path.stat().st_size > MAX_SPEC_FILE:
        raise ImageSpecError(f"{what} file is over {MAX_SPEC_FILE} bytes", where=what)
    text = path.read_bytes().decode("utf-8", "replace")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline; empty arguments in between are real (sh -c "")
    return lines


class ImageSpecError(NitrodeckError):
    code = "ND-IMAGE-SPEC"


def read_image_spec(eif_path: str | os.PathLike[str] | EifFile, dest_dir: str | os.PathLike[str]) -> ImageSpec:
    """Unpack the customer ramdisk (the last one) of an EIF into ``dest_dir`` (the emulator's boot).

    Give the :class:`EifFile` that was measured: the ramdisk is read from its open descriptor, so
    what is unpacked is what was measured (a path is opened once here, for tools and tests).
    """
    eif = eif_path if isinstance(eif_path, EifFile) else read_eif(eif_path)
    where = str(eif.path)
    ramdisks = eif.ramdisks
    if len(ramdisks) < 2:
        raise ImageSpecError("the EIF has no customer ramdisk (only the bootstrap one)", where=where)
    dest = Path(dest_dir)
    with eif.open_section(ramdisks[-1]) as stream:
        try:
            cpio.extract(stream, dest)
        except cpio.CpioError as exc:
            raise ImageSpecError(f"customer ramdisk: {exc.message}", where=exc.where) from None
    eif.check_unchanged()
    rootfs = dest / "rootfs"
    if not rootfs.is_dir() or rootfs.is_symlink():
        raise ImageSpecError("the customer ramdisk has no rootfs/ folder", where=where)
    return ImageSpec(rootfs=rootfs, cmd=_lines(dest / "cmd", "cmd"), env=_lines(dest / "env", "env"))
