"""Which nitro-cli nitrodeck drives: the real one, or the emulator (nitro-emu).

Precedence: an explicit flag, then ``$NITRODECK_BACKEND``, then auto-detection. Auto picks the real
tool only when both ``nitro-cli`` is on PATH and the driver device exists: a nitro-cli binary
without the device (a build host) cannot run enclaves, so the emulator is the useful default there.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from core import home
from core.errors import ConfigError
from core.vsock import Transport, parent_transport

ENV_BACKEND = "NITRODECK_BACKEND"
DEVICE = Path("/dev/nitro_enclaves")
CHOICES = ("auto", "real", "emulator")


@dataclass(frozen=True)
class Backend:
    name: str  # "real" | "emulator"
    argv: tuple[str, ...]
    display_name: str  # what the operator would type: "nitro-cli" or "nitro-emu"
    vsock_dir: Path | None = None
    #: how the choice was made ("flag", "env", "auto"), shown by `status`
    chosen_by: str = field(default="flag", compare=False)

    @property
    def is_emulator(self) -> bool:
        return self.name == "emulator"

    def transport(self) -> Transport:
        """The parent's vsock transport: AF_VSOCK on Nitro, the emulated folder otherwise."""
        return parent_transport(self.vsock_dir)


def real_backend(chosen_by: str = "flag") -> Backend:
    return Backend("real", ("nitro-cli",), "nitro-cli", None, chosen_by)


def emulator_backend(chosen_by: str = "flag") -> Backend:
    # The same interpreter that runs nitrodeck, so a venv install needs no `nitro-emu` on PATH.
    return Backend("emulator", (sys.executable, "-m", "emulator"), "nitro-emu", home.emulator_vsock_dir(), chosen_by)


def real_available(device: Path = DEVICE, path: str | None = None) -> bool:
    return shutil.which("nitro-cli", path=path) is not None and device.exists()


def select_backend(flag: str | None = None, *, device: Path = DEVICE, path: str | None = None) -> Backend:
    """Resolve the backend. ``device``/``path`` (a PATH string) are injectable for tests."""
    chosen_by = "flag"
    value = flag
    if value is None or value == "":
        env = os.environ.get(ENV_BACKEND, "").strip()
        if env:
            value, chosen_by = env, "env"
    if value is None or value == "" or value == "auto":
        chosen_by = "auto" if chosen_by == "flag" else chosen_by
        return real_backend(chosen_by) if real_available(device, path) else emulator_backend(chosen_by)
    value = value.strip().lower()
    if value == "real":
        return real_backend(chosen_by)
    if value == "emulator":
        return emulator_backend(chosen_by)
    source = "--backend" if chosen_by == "flag" else f"${ENV_BACKEND}"
    raise ConfigError(
        f"unknown backend {value[:40]!r}",
        where=source,
        hint=f"use one of: {', '.join(CHOICES)}",
    )
