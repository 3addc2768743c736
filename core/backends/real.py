"""The real backend: nitro-cli on PATH and the Nitro Enclaves driver's device."""

from __future__ import annotations

import shutil
from pathlib import Path

from core.backends.base import Backend

DEVICE = Path("/dev/nitro_enclaves")


def real_backend(chosen_by: str = "flag") -> Backend:
    return Backend("real", ("nitro-cli",), "nitro-cli", None, chosen_by)


def real_available(device: Path = DEVICE, path: str | None = None) -> bool:
    return shutil.which("nitro-cli", path=path) is not None and device.exists()
