"""Which backend nitrodeck drives, chosen from the backends registered in this process.

Precedence: an explicit flag, then ``$NITRODECK_BACKEND``, then auto-detection. Auto picks the real
tool only when both ``nitro-cli`` is on PATH and the driver device exists: a nitro-cli binary
without the device (a build host) cannot run enclaves, so the emulator is the useful default there.

The real backend is built in. Others register themselves when their package is imported (the
emulator's own emulator/backend.py registers it, and the console's entry points load that), so that core depends on
no implementation of its own test double.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from core.backends.base import Backend
from core.backends.real import real_available, real_backend
from core.errors import ConfigError

ENV_BACKEND = "NITRODECK_BACKEND"
CHOICES = ("auto", "real", "emulator")

#: name -> factory(chosen_by) -> Backend
_FACTORIES: dict[str, Callable[[str], Backend]] = {"real": real_backend}


def register(name: str, factory: Callable[[str], Backend]) -> None:
    _FACTORIES[name] = factory


def names() -> list[str]:
    return sorted(_FACTORIES)


def load(name: str, chosen_by: str = "flag") -> Backend:
    factory = _FACTORIES.get(name)
    if factory is None:
        raise ConfigError(
            f"the {name} backend is not installed in this process",
            where="--backend" if chosen_by == "flag" else f"${ENV_BACKEND}",
            hint="install the nitrodeck package with its emulator, or use --backend real",
        )
    return factory(chosen_by)


def select_backend(flag: str | None = None, *, device: Path | None = None, path: str | None = None) -> Backend:
    """Resolve the backend. ``device`` (default: $NITRODECK_DEVICE or /dev/nitro_enclaves) and ``path``
    (a PATH string) are injectable for tests."""
    chosen_by = "flag"
    value = flag
    if value is None or value == "":
        env = os.environ.get(ENV_BACKEND, "").strip()
        if env:
            value, chosen_by = env, "env"
    if value is None or value == "" or value.strip().lower() == "auto":
        # "auto" from the flag or the environment is still an automatic choice: whatever it picks was
        # not named by the operator (verify-attestation widens trust only for a named emulator)
        chosen_by = "auto"
        if real_available(device, path) or "emulator" not in _FACTORIES:
            return real_backend(chosen_by)
        return load("emulator", chosen_by)
    value = value.strip().lower()
    if value in CHOICES[1:]:
        return load(value, chosen_by)
    source = "--backend" if chosen_by == "flag" else f"${ENV_BACKEND}"
    raise ConfigError(
        f"unknown backend {value[:40]!r}",
        where=source,
        hint=f"use one of: {', '.join(CHOICES)}",
    )
