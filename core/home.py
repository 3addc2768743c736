"""One home folder for all nitrodeck and emulator state, so separate worlds can run side by side.

Everything nitrodeck writes lives under ``$NITRODECK_HOME`` (default ``$XDG_DATA_HOME/nitrodeck``,
i.e. ``~/.local/share/nitrodeck``). Tests, demos and a user's own setup each point it elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_HOME = "NITRODECK_HOME"


def home() -> Path:
    explicit = os.environ.get(ENV_HOME)
    if explicit:
        return Path(explicit).expanduser().absolute()
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "nitrodeck"


def ensure(path: Path, mode: int = 0o700) -> Path:
    """Create ``path`` and any missing parents with ``mode`` (mkdir's parents would get 0777 minus
    the umask, i.e. a world-readable home); a home created here is made private too."""
    if path.is_dir():
        return path
    missing: list[Path] = []
    cur = path
    while not cur.exists() and cur != cur.parent:
        missing.append(cur)
        cur = cur.parent
    root = home()
    for folder in reversed(missing):
        ours = folder == root or root in folder.parents
        try:
            folder.mkdir(mode=mode if ours else 0o777)
        except FileExistsError:
            continue
        if ours:
            os.chmod(folder, mode)  # mkdir's mode is masked by the umask
    return path


def config_file() -> Path:
    """nitrodeck's own settings (YAML)."""
    return home() / "config.yaml"


def audit_log() -> Path:
    """JSON lines, one per mutating lifecycle call."""
    return home() / "audit.log"


def journal_file() -> Path:
    """The lifecycle journal: JSON lines, one per enclave event (core/ops/journal.py), rotated by size."""
    return home() / "journal.jsonl"


def expected_pcrs_dir() -> Path:
    """Pinned expected measurements, one JSON file per image name."""
    return home() / "expected"


def eif_library() -> Path:
    """Default folder where built EIFs are kept and offered for launch."""
    return home() / "eifs"


def logs_dir() -> Path:
    return home() / "logs"


# --- the emulator's world -------------------------------------------------------------------------


def emulator_dir() -> Path:
    return home() / "emulator"


def emulator_etc() -> Path:
    """The emulator's /etc/nitro_enclaves (allocator.yaml, vsock-proxy.yaml, the emulator root CA)."""
    return emulator_dir() / "etc"


def emulator_instance_file() -> Path:
    """The modelled parent instance (vCPUs, cores, memory, NUMA, instance ID)."""
    return emulator_dir() / "instance.yaml"


def emulator_run_dir() -> Path:
    """The emulator's /run/nitro_enclaves: per-enclave slots, control sockets, the allocation lock."""
    return emulator_dir() / "run"


def emulator_log_dir() -> Path:
    """The emulator's /var/log/nitro_enclaves: nitro_enclaves.log and err<time>.log files."""
    return emulator_dir() / "log"


def emulator_console_dir() -> Path:
    """Per-enclave console files; they outlive the enclave so operators can read why it died."""
    return emulator_dir() / "console"


def emulator_vsock_dir() -> Path:
    """Emulated vsock: <cid>/<port>.sock Unix sockets (this kernel has no vsock loopback)."""
    return emulator_dir() / "vsock"
