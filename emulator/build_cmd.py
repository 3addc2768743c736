"""build-enclave: core.eif.build with nitro-cli's progress lines and errors."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from core.errors import NitrodeckError
from core.models import BuildRequest
from emulator.errors import EmuError, known_code


def request_from_args(args: argparse.Namespace) -> BuildRequest:
    return BuildRequest(
        output_file=args.output_file,
        docker_uri=args.docker_uri,
        docker_dir=args.docker_dir,
        rootfs=args.rootfs,
        cmd=args.cmd,
        env=list(args.env or []),
        image_tar=args.image_tar,
        signing_certificate=args.signing_certificate,
        private_key=args.private_key,
        name=args.name,
        version=args.image_version,
        metadata=args.metadata,
    )


def named_blobs_problem() -> EmuError | None:
    """lib.rs build_from_docker opens ``{NITRO_CLI_BLOBS}/cmdline`` before anything else (E19 with the
    file and Open or Read). Only a folder named by NITRO_CLI_BLOBS is held to that: without it the
    emulator builds with its stand-in blobs (docs/emulator.md, known differences)."""
    if "NITRO_CLI_BLOBS" not in os.environ:
        return None
    path = f"{os.environ['NITRO_CLI_BLOBS']}/cmdline"  # formatted as nitro-cli does: "dir/" gives "dir//cmdline"
    try:
        # File::open opens a folder too (its read fails); never block on a FIFO
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        return EmuError(code="E19", info=[path, "Open"], subactions=[f"Could not open kernel command line file: {exc}"])
    try:
        os.read(fd, 64 * 1024).decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return EmuError(code="E19", info=[path, "Read"], subactions=[f"Failed to read kernel command line: {exc}"])
    finally:
        os.close(fd)
    return None


def run_build(args: argparse.Namespace) -> dict[str, Any]:
    """Build the EIF; returns build-enclave's stdout object ({"Measurements": ...})."""
    from core.eif import build
    from emulator import stand_ins

    stand_ins.register()

    def progress(line: str) -> None:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()

    blobs_problem = named_blobs_problem()
    if blobs_problem is not None:
        progress("Start building the Enclave Image...")
        raise blobs_problem

    try:
        # core.eif.build says "Start building..." / "Enclave Image successfully created." itself
        result = build.build_eif(
            request_from_args(args), progress=progress, build_time=getattr(args, "build_time", None)
        )
    except NitrodeckError as exc:
        code = getattr(exc, "cli_code", None) or "E48"
        if not known_code(code):
            code = "E48"
        raise EmuError(code=code, info=list(getattr(exc, "cli_info", [])), subactions=[str(exc)]) from None
    except OSError as exc:
        raise EmuError(code="E19", info=[exc.filename or args.output_file, "Write"], subactions=[str(exc)]) from None
    if not os.path.exists(result.output_file):
        raise EmuError(code="E48", subactions=["the builder reported success but wrote no file"])
    return {"Measurements": result.measurements.as_dict()}
