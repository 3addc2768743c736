"""The kernel, cmdline, init and nsm.ko an EIF is built from.

Real builds use nitro-cli's blobs folder ($NITRO_CLI_BLOBS, default /usr/share/nitro_enclaves/blobs/).
Where none exists (a plain Linux box), the emulator's small stand-in files are used instead; the
EIF is then marked as built from stand-ins, and its PCRs are stable but never real Nitro values.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

ENV_BLOBS = "NITRO_CLI_BLOBS"
DEFAULT_BLOBS = "/usr/share/nitro_enclaves/blobs/"
#: folders of stand-in blobs, registered by whoever ships them (the emulator: emulator/backend.py)
_STAND_INS: list[Path] = []
MAX_CMDLINE = 64 * 1024
MAX_CONFIG_HEAD = 64 * 1024


@dataclass(frozen=True)
class Blobs:
    kernel: Path
    cmdline: bytes
    init: Path
    nsm_ko: Path | None
    kernel_config: Path | None
    stand_in: bool
    arch: str = "x86_64"

    @property
    def eif_flags(self) -> int:
        return 1 if self.arch == "aarch64" else 0

    def os_and_kernel(self) -> tuple[str, str]:
        """(OperatingSystem, KernelVersion) from line 3 of the kernel config, as nitro-cli reads it."""
        return kernel_identity(self.kernel_config)


def kernel_identity(config: Path | None) -> tuple[str, str]:
    """Line 3 (``# Linux/x86_64 4.14.256-209.484.amzn2.x86_64 Kernel Configuration``) split on
    space, '/' and '-': words 1 and 3."""
    if config is None:
        return ("Unknown", "Unknown")
    try:
        with open(config, "rb") as fh:
            head = fh.read(MAX_CONFIG_HEAD).decode("utf-8", "replace")
    except OSError:
        return ("Unknown", "Unknown")
    lines = head.split("\n")
    if len(lines) < 3:
        return ("Unknown", "Unknown")
    words = re.split(r"[ /-]", lines[2])
    if len(words) < 4:
        return ("Unknown", "Unknown")
    return (words[1], words[3])


def _from_dir(folder: Path, stand_in: bool) -> Blobs | None:
    for kernel_name, arch in (("bzImage", "x86_64"), ("Image", "aarch64")):
        kernel = folder / kernel_name
        cmdline = folder / "cmdline"
        init = folder / "init"
        if kernel.is_file() and cmdline.is_file() and init.is_file():
            try:
                with open(cmdline, "rb") as fh:
                    text = fh.read(MAX_CMDLINE)
            except OSError:
                return None
            config = folder / f"{kernel_name}.config"
            nsm = folder / "nsm.ko"
            return Blobs(
                kernel=kernel,
                cmdline=text.strip(),  # nitro-cli trims it and stores no NUL terminator
                init=init,
                nsm_ko=nsm if nsm.is_file() else None,
                kernel_config=config if config.is_file() else None,
                stand_in=stand_in,
                arch=arch,
            )
    return None


def register_stand_ins(folder: Path) -> None:
    """Offer a folder of stand-in blobs for builds where nitro-cli's are absent."""
    if folder not in _STAND_INS:
        _STAND_INS.append(folder)


def load_blobs() -> Blobs:
    """nitro-cli's blobs when a kernel + cmdline + init exist there, else the emulator's stand-ins."""
    real = _from_dir(Path(os.environ.get(ENV_BLOBS) or DEFAULT_BLOBS), stand_in=False)
    if real is not None:
        return real
    for folder in _STAND_INS:
        stand_in = _from_dir(folder, stand_in=True)
        if stand_in is not None:
            return stand_in
    from core.errors import ConfigError

    raise ConfigError(
            "no kernel blobs: neither $NITRO_CLI_BLOBS nor the emulator's stand-ins are present",
            where=os.environ.get(ENV_BLOBS) or DEFAULT_BLOBS,
            hint="install aws-nitro-enclaves-cli, or point NITRO_CLI_BLOBS at nitro-cli's blobs folder",
        )
