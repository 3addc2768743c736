"""The real backend: nitro-cli on PATH and the Nitro Enclaves driver's device.

Where the device and sysfs are is configurable, because containers map them elsewhere: an ECS task
may expose the device under another path, and a container often mounts the host's sysfs at another
folder. ``NITRODECK_DEVICE`` (default ``/dev/nitro_enclaves``) and ``NITRODECK_SYSFS`` (default
``/sys``) say where they are; every reader of either goes through :func:`device_path` and
:func:`sysfs_root`.

Read-only has four reasons, and each one says what the operator can do about it:
the ``--read-only`` flag, ``NITRODECK_READ_ONLY`` in the environment, a missing device, or a device
this user cannot write. The first two are the operator's choice and refuse every change; the last two
only make what needs the device impossible (launch, terminate), so a build host without the driver
can still build and pin.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from core.backends.base import Backend

DEFAULT_DEVICE = "/dev/nitro_enclaves"
DEFAULT_SYSFS = "/sys"
ENV_DEVICE = "NITRODECK_DEVICE"
ENV_SYSFS = "NITRODECK_SYSFS"
ENV_READ_ONLY = "NITRODECK_READ_ONLY"
#: kept for callers that name the default; use device_path() for the configured one
DEVICE = Path(DEFAULT_DEVICE)


def device_path() -> Path:
    """The Nitro Enclaves device: ``$NITRODECK_DEVICE`` or /dev/nitro_enclaves."""
    return Path(os.environ.get(ENV_DEVICE, "").strip() or DEFAULT_DEVICE)


def sysfs_root() -> Path:
    """The folder that is sysfs: ``$NITRODECK_SYSFS`` or /sys."""
    return Path(os.environ.get(ENV_SYSFS, "").strip() or DEFAULT_SYSFS)


def real_backend(chosen_by: str = "flag") -> Backend:
    return Backend("real", ("nitro-cli",), "nitro-cli", None, chosen_by)


def real_available(device: Path | None = None, path: str | None = None) -> bool:
    device = device_path() if device is None else device
    import shutil  # auto-detection only: an explicit --backend never needs it

    return shutil.which("nitro-cli", path=path) is not None and device.exists()


@dataclass(frozen=True)
class ReadOnlyReason:
    """Why nitrodeck runs read-only, and what the operator can do about it."""

    kind: str  # "flag" | "environment" | "device-missing" | "device-not-writable"
    detail: str  # one line, shown in status, the TUI header and every refusal
    hint: str

    @property
    def refuses_everything(self) -> bool:
        """The operator asked for read-only: nothing changes. A device problem only stops the device."""
        return self.kind in ("flag", "environment")

    @property
    def label(self) -> str:
        """A few words for the TUI header badge."""
        return {
            "flag": "--read-only",
            "environment": f"${ENV_READ_ONLY}",
            "device-missing": "no device",
            "device-not-writable": "device not writable",
        }[self.kind]


def env_read_only() -> bool:
    return os.environ.get(ENV_READ_ONLY, "").strip().lower() in ("1", "true", "yes", "on")


def backend_env(changes_nothing: bool) -> dict[str, str] | None:
    """The environment of a backend command: this process's own (None), plus ``NITRODECK_READ_ONLY=1``
    when nothing may change. nitro-emu honours it as nitrodeck does (it refuses changes and, describing,
    writes nothing: no default instance.yaml or allocator.yaml, no lock files, no log lines); nitro-cli
    does not read it. Passed explicitly because ``--read-only`` is a flag, not in the environment."""
    if not changes_nothing:
        return None
    return {**os.environ, ENV_READ_ONLY: "1"}


def read_only_reason(backend: Backend, flag: bool = False, device: Path | None = None) -> ReadOnlyReason | None:
    """The reason nitrodeck is read-only, or None when it may change things."""
    if flag:
        return ReadOnlyReason("flag", "read-only: the --read-only flag was given", "restart without --read-only")
    if env_read_only():
        return ReadOnlyReason(
            "environment",
            f"read-only: {ENV_READ_ONLY}={os.environ.get(ENV_READ_ONLY, '').strip()[:20]} is set",
            f"unset {ENV_READ_ONLY} to allow changes",
        )
    if backend.name != "real":
        return None
    device = device_path() if device is None else device
    where = f" (set {ENV_DEVICE} if it is mapped elsewhere)" if str(device) == DEFAULT_DEVICE else f" (from ${ENV_DEVICE})"
    if not device.exists():
        return ReadOnlyReason(
            "device-missing",
            f"read-only: {device} does not exist, so enclaves cannot be launched or terminated here{where}",
            "load the Nitro Enclaves driver (an enclave-enabled instance with aws-nitro-enclaves-cli installed), "
            f"or point {ENV_DEVICE} at the device; building and pinning work without it",
        )
    if not os.access(device, os.W_OK):
        return ReadOnlyReason(
            "device-not-writable",
            f"read-only: {device} is not writable by this user, so enclaves cannot be launched or terminated",
            f"add this user to the device's group (`sudo usermod -aG ne $USER`, then log in again) or run as a user "
            f"who can write {device}; building and pinning work without it",
        )
    return None
