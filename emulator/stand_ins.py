"""The emulator's stand-in kernel, cmdline and init (``emulator/blobs/``), offered to core's EIF builder
where nitro-cli's blobs are absent. Both emulator/backend.py (when nitrodeck loads the emulator) and
build-enclave register them; registering twice is harmless."""

from __future__ import annotations

from pathlib import Path

from core.eif import blobs

STAND_IN_BLOBS = Path(__file__).resolve().parent / "blobs"


def register() -> None:
    blobs.register_stand_ins(STAND_IN_BLOBS)
