"""run-enclave's ``--config`` JSON file, for ``nitrodeck launch --config FILE`` (nitro-cli's spelling).

The keys are nitro-cli's (``RunEnclavesArgs``, snake_case): ``eif_path``, ``memory_mib``, ``cpu_count`` or
``cpu_ids``, optional ``enclave_cid``, ``enclave_name``, ``debug_mode``, ``attach_console``. Unknown
keys are ignored, as serde does there. A relative ``eif_path`` is resolved against the caller's cwd.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from console.argtypes import resolve_path
from core.errors import UsageError
from core.files import read_limited
from core.models import LaunchRequest

MAX_CONFIG = 64 * 1024
WHERE = "launch --config"


@dataclass(frozen=True)
class LaunchConfig:
    request: LaunchRequest
    attach_console: bool


def _typed(data: dict[str, Any], key: str, kind: type | tuple[type, ...], required: bool = False) -> Any:
    value = data.get(key)
    if value is None:
        if required:
            raise UsageError(f"missing field `{key}` in the enclave config", where=WHERE)
        return None
    # JSON true is a Python bool, which is also an int: numbers must not be booleans
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise UsageError(f"invalid type for `{key}` in the enclave config", where=WHERE)
    return value


def parse_launch_config(raw: bytes) -> LaunchConfig:
    if len(raw) > MAX_CONFIG:
        raise UsageError(f"the enclave config is larger than {MAX_CONFIG} bytes", where=WHERE)
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise UsageError(f"invalid JSON format for the enclave config: {str(exc)[:120]}", where=WHERE) from None
    if not isinstance(data, dict):
        raise UsageError("the enclave config must be a JSON object", where=WHERE)
    eif_path = _typed(data, "eif_path", str, required=True)
    memory = _typed(data, "memory_mib", int, required=True)
    cpu_count = _typed(data, "cpu_count", int)
    cpu_ids = _typed(data, "cpu_ids", list)
    if cpu_count is None and cpu_ids is None:
        raise UsageError("missing both `cpu-count` and `cpu-ids` in the enclave config", where=WHERE)
    if cpu_count is not None and cpu_ids is not None:
        raise UsageError("both `cpu-count` and `cpu-ids` are set in the enclave config", where=WHERE)
    if cpu_ids is not None and not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in cpu_ids):
        raise UsageError("`cpu_ids` must be a list of CPU numbers", where=WHERE)
    for key, value in (("memory_mib", memory), ("cpu_count", cpu_count)):
        if value is not None and not 0 <= value < 1 << 32:
            raise UsageError(f"`{key}` is out of range", where=WHERE)
    attach = bool(_typed(data, "attach_console", bool))
    try:
        path = resolve_path(eif_path)
    except Exception:  # noqa: BLE001 - argparse's ArgumentTypeError: not a usable path
        raise UsageError("`eif_path` is not a path", where=WHERE) from None
    request = LaunchRequest(
        eif_path=path,
        memory_mib=memory,
        cpu_count=cpu_count,
        cpu_ids=cpu_ids,
        cid=_typed(data, "enclave_cid", int),
        debug_mode=bool(_typed(data, "debug_mode", bool)) or attach,  # nitro-cli: attaching implies debug
        name=_typed(data, "enclave_name", str),
    )
    return LaunchConfig(request, attach)


def read_launch_config(path: str) -> LaunchConfig:
    return parse_launch_config(read_limited(path, MAX_CONFIG, where=WHERE))
