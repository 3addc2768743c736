"""argparse ``type=`` converters shared by every subcommand.

Paths are made absolute against the caller's working directory as they are parsed: the backend (and
the enclave processes it starts) may run elsewhere, so a relative ``--eif-path app.eif`` must never
reach it as it was typed.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

_MAX_PATH = 4096  # PATH_MAX


def resolve_path(text: str) -> str:
    """A path argument, absolute against the caller's cwd, ``~`` expanded (symlinks are kept)."""
    if not text or len(text) > _MAX_PATH or "\0" in text:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a path")
    # os.path.expanduser leaves an unknown ~user as it is (Path.expanduser raises)
    return str(Path(os.path.expanduser(text)).absolute())


def abs_path(text: str) -> Path:
    """:func:`resolve_path` as a ``Path``."""
    return Path(resolve_path(text))


def key_or_path(text: str) -> str:
    """--private-key: a local PEM file (resolved) or a KMS key ARN (kept as it is)."""
    return text if text.startswith("arn:") else resolve_path(text)
