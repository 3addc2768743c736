"""Packaging the payload as an enclave image without Docker: a rootfs folder plus a build request.

The rootfs holds only what the payload imports from nitrodeck (the core/ and enclave_app/ modules in
MODULES) under /app; its Python interpreter and third-party wheels come from the image the EIF is built
on (the Dockerfile next to this file) or, under the emulator, from the caller's environment.
Every file is copied in sorted order with fixed modes and one fixed mtime, and the build time is
pinned, so the same sources always give the same EIF and the same PCRs.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

from core import __version__, home
from core.errors import UsageError
from core.models import BuildRequest

REPO = Path(__file__).resolve().parent.parent
#: what is copied into /app, and so measured into PCR0: the payload and exactly the modules of core it
#: imports (with their packages' __init__ files). tests/test_enclave_app_packaging.py checks this list
#: against the payload's imports read with `ast`, both ways: nothing it needs is missing, nothing else
#: is carried. This module (packaging) runs on the parent and stays out.
MODULES = (
    "core/__init__.py", "core/errors.py", "core/files.py", "core/home.py", "core/yamlsafe.py",
    "core/attest/__init__.py", "core/attest/nsm.py",
    "core/channel/__init__.py", "core/channel/protocol.py", "core/channel/proxy.py", "core/channel/unixsock.py",
    "core/channel/vsock.py", "core/channel/vsock_peers.py",
    "core/crypto/__init__.py", "core/crypto/cms.py",
    "core/kms/__init__.py", "core/kms/client.py",
    "enclave_app/__init__.py", "enclave_app/__main__.py", "enclave_app/console_log.py", "enclave_app/forwarder.py",
    "enclave_app/keys.py", "enclave_app/kms.py", "enclave_app/methods.py", "enclave_app/server.py",
)
#: fixed so rebuilding unchanged sources reproduces the EIF bit for bit (PCRs included)
PAYLOAD_BUILD_TIME = "2026-01-01T00:00:00Z"
PAYLOAD_NAME = "nitrodeck-payload"
PAYLOAD_PORT = 5005
PAYLOAD_CMD = f"python3 -m enclave_app --port {PAYLOAD_PORT}"
PAYLOAD_ENV = ("PYTHONPATH=/app", "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1")


def payload_dir() -> Path:
    return home.home() / "build" / "payload"


def _epoch(build_time: str) -> int:
    try:
        when = dt.datetime.fromisoformat(build_time[:40].replace("Z", "+00:00"))
    except ValueError as exc:
        raise UsageError(
            f"build time {build_time[:40]!r} is not an ISO 8601 time",
            where="payload build",
            hint="e.g. 2026-01-01T00:00:00Z",
        ) from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp())


def source_files() -> list[Path]:
    """The payload's sources, relative to the repository, sorted (no caches, no tests)."""
    return sorted(Path(rel) for rel in MODULES)


def prepare_rootfs(build_time: str = PAYLOAD_BUILD_TIME, dest: Path | None = None, repo: Path = REPO) -> Path:
    """(Re)create the rootfs folder; returns it. Replaced whole so stale files cannot leak in."""
    root = (dest or payload_dir()) / "rootfs"
    if root.exists():
        shutil.rmtree(root)
    stamp = _epoch(build_time)
    app = root / "app"
    for rel in source_files():
        target = app / rel
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        shutil.copyfile(repo / rel, target)
        os.chmod(target, 0o644)
        os.utime(target, (stamp, stamp))
    # directories last, deepest first, so creating files does not touch their times again
    for folder in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        os.chmod(folder, 0o755)
        os.utime(folder, (stamp, stamp))
    os.chmod(root, 0o755)
    os.utime(root, (stamp, stamp))
    return root


def payload_build_request(
    output_file: str, *, build_time: str | None = None, repo: Path = REPO
) -> BuildRequest:
    """The build request for the nitrodeck payload EIF (``nitrodeck build --payload``).

    ``repo`` is where the sources are taken from (a snapshot, for tests that compare builds).
    """
    when = build_time or PAYLOAD_BUILD_TIME
    _epoch(when)  # reject a malformed time before anything is written
    root = prepare_rootfs(when, repo=repo)
    return BuildRequest(
        output_file=output_file,
        rootfs=str(root),
        cmd=PAYLOAD_CMD,
        env=list(PAYLOAD_ENV),
        name=PAYLOAD_NAME,
        version=__version__,
        payload=True,
        build_time=when,
    )


def payload_docker_request(
    output_file: str, docker_uri: str, *, build_time: str | None = None, repo: Path = REPO
) -> BuildRequest:
    """The payload built through Docker: a ``FROM scratch`` context holding the same rootfs.

    nitro-cli's ``--docker-dir`` builds the context and tags it ``docker_uri``, then makes the EIF
    from that image. Under the emulator the interpreter comes from the host, so no base image is
    needed (nothing can be pulled on a closed network); for a real enclave the image must carry
    Python and the wheels, which deploy/Dockerfile does.
    """
    when = build_time or PAYLOAD_BUILD_TIME
    _epoch(when)
    context = payload_dir() / "docker"
    root = prepare_rootfs(when, dest=context, repo=repo)
    argv = ", ".join(f'"{a}"' for a in PAYLOAD_CMD.split())
    env = "\n".join(f"ENV {item.replace('=', ' ', 1)}" for item in PAYLOAD_ENV)
    (context / "Dockerfile").write_text(
        "# generated by nitrodeck: the enclave payload's sources on an empty base\n"
        f"FROM scratch\nCOPY {root.name}/ /\n{env}\nCMD [{argv}]\n"
    )
    return BuildRequest(
        output_file=output_file,
        docker_uri=docker_uri,
        docker_dir=str(context),
        name=PAYLOAD_NAME,
        version=__version__,
        payload=True,
        build_time=when,
    )


def payload_request(output_file: str, build_time: str | None = None, docker_uri: str | None = None) -> BuildRequest:
    """The payload's build request for core's Lifecycle (its ``payload`` factory): through the Docker
    daemon when a URI is given, else straight from the rootfs."""
    if docker_uri:
        return payload_docker_request(output_file, docker_uri, build_time=build_time)
    return payload_build_request(output_file, build_time=build_time)
