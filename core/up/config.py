"""Configuration of `nitrodeck up`: a YAML file, then NITRODECK_UP_* variables, then flags (flags win).

Every field is validated once, up front, with a ConfigError naming where the bad value came from
(``file.yaml: memory_mib``, ``$NITRODECK_UP_CID``, ``--cid``), so a task definition typo fails at
start-up with a clear line in the ECS log instead of half-way through a launch. A relative file path
is made absolute here: from the file's folder when up.yaml sets it, else from the working directory.
"""

from __future__ import annotations

import base64
import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from core import home
from core.errors import ConfigError
from core.numbers import parse_seconds
from core.yamlsafe import YamlRefused, load_yaml

ENV_PREFIX = "NITRODECK_UP_"
ENV_METADATA = "ECS_CONTAINER_METADATA_URI_V4"
MAX_CONFIG_BYTES = 256 * 1024
SOURCES = ("docker", "payload")


@dataclass
class UpConfig:
    #: where the enclave image comes from: this container's image (docker) or the nitrodeck payload
    source: str = "docker"
    #: image to build; default: this container's image from the ECS task metadata endpoint
    docker_uri: str | None = None
    metadata_uri: str | None = None
    eif_path: str | None = None
    name: str = "nitrodeck-up"
    cpu_count: int = 2
    memory_mib: int = 512
    cid: int | None = 16
    debug_mode: bool = False
    #: TCP -> enclave bridge (the seed's socat sidecar): listen address and the enclave's port
    bridge_listen: str = "127.0.0.1:8888"
    enclave_port: int = 5005
    #: vsock-proxy for KMS (the seed's second sidecar)
    proxy_port: int = 8000
    proxy_workers: int = 4
    proxy_config: str | None = None
    #: "local" = the emulator's local KMS in-process; a URL; or empty for kms.<region>.amazonaws.com:443
    kms_endpoint: str | None = None
    region: str = "us-east-1"
    key_id: str | None = None
    ciphertext: str | None = None
    #: the same ciphertext inline (base64), for task definitions: a KMS ciphertext is not secret,
    #: and it must not live in the image, whose measurements it is sealed to
    ciphertext_b64: str | None = None
    #: refresh credentials this many seconds before they expire
    credentials_margin: float = 300.0
    #: how often the supervisor looks at the enclave
    check_interval: float = 2.0
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    #: give up after this many restarts in a row (0 = never give up)
    max_restarts: int = 0
    #: how long to wait for the payload to answer after a launch
    ready_timeout: float = 60.0
    #: run the read-only agent (`nitrodeck serve`) in-process on this HOST:PORT; empty: no agent
    serve: str | None = None
    #: the agent's bearer token file (mode 0600); required when ``serve`` is not a loopback address
    serve_token_file: str | None = None

    def eif(self) -> Path:
        return Path(self.eif_path) if self.eif_path else home.eif_library() / f"{self.name}.eif"

    def bridge_address(self) -> tuple[str, int]:
        host, _, port = self.bridge_listen.rpartition(":")
        return host.strip("[]") or "127.0.0.1", int(port)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_FIELDS = {f.name: f for f in fields(UpConfig)}
#: settings that name a file: a relative one is taken from the configuration file's folder when it
#: comes from that file (the file travels with what it names), else from the working directory
#: `up` was started in, as every path argument of the CLI is
PATH_FIELDS = ("eif_path", "proxy_config", "ciphertext", "serve_token_file")


def _absolute(value: Any, base: Path | None) -> Any:
    if not isinstance(value, str) or not value or os.path.isabs(value):
        return value
    return os.path.abspath(os.path.join(base, value) if base is not None else value)


def _coerce(name: str, value: Any, where: str) -> Any:
    """One field's value from YAML, an env string or a flag, into its declared type."""
    default = getattr(UpConfig(), name)
    kind = _FIELDS[name].type
    if value is None or (isinstance(value, str) and value.strip() == "" and "None" in str(kind)):
        if "None" in str(kind):
            return None
        raise ConfigError(f"{name} needs a value", where=where)
    if isinstance(default, bool) or kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name} must be true or false, got {str(value)[:40]!r}", where=where)
    if "int" in str(kind):
        if isinstance(value, bool):
            raise ConfigError(f"{name} must be an integer", where=where)
        try:
            return int(str(value).strip())
        except ValueError:
            raise ConfigError(f"{name} must be an integer, got {str(value)[:40]!r}", where=where) from None
    if "float" in str(kind):
        # finite and bounded: YAML's .nan/.inf and "1e999" parse as floats, then no timer ever fires
        return parse_seconds(value, what=name, error=ConfigError, where=where)
    if not isinstance(value, str | int | float) or len(str(value)) > 2048:
        raise ConfigError(f"{name} must be text of at most 2048 characters", where=where)
    return str(value)


def _validate(cfg: UpConfig, where: Mapping[str, str]) -> None:
    def bad(name: str, message: str) -> ConfigError:
        return ConfigError(message, where=where.get(name, name))

    if cfg.source not in SOURCES:
        raise bad("source", f"source must be one of {', '.join(SOURCES)}, got {cfg.source[:40]!r}")
    if not 1 <= cfg.cpu_count <= 256:
        raise bad("cpu_count", "cpu_count must be 1..256")
    if not 64 <= cfg.memory_mib <= 1024 * 1024:
        raise bad("memory_mib", "memory_mib must be at least 64")
    if cfg.cid is not None and not 4 <= cfg.cid < 0xFFFFFFFF:
        raise bad("cid", "cid must be at least 4 (0-3 are reserved) and below 2^32-1")
    for name in ("enclave_port", "proxy_port"):
        if not 1 <= getattr(cfg, name) <= 0xFFFFFFFF:
            raise bad(name, f"{name} must be a vsock port 1..2^32-1")
    if not 1 <= cfg.proxy_workers <= 64:
        raise bad("proxy_workers", "proxy_workers must be 1..64")
    try:
        host, port = cfg.bridge_address()
    except ValueError:
        raise bad("bridge_listen", "bridge_listen must be HOST:PORT") from None
    if not host or not 0 <= port <= 65535:
        raise bad("bridge_listen", "bridge_listen must be HOST:PORT with a TCP port")
    for name in ("credentials_margin", "check_interval", "backoff_initial", "backoff_max", "ready_timeout"):
        if not 0 < getattr(cfg, name) <= 86400:
            raise bad(name, f"{name} must be a positive number of seconds")
    if cfg.backoff_max < cfg.backoff_initial:
        raise bad("backoff_max", "backoff_max must not be below backoff_initial")
    if cfg.max_restarts < 0:
        raise bad("max_restarts", "max_restarts must be 0 (never give up) or more")
    if cfg.ciphertext and cfg.ciphertext_b64:
        raise bad("ciphertext_b64", "set ciphertext or ciphertext_b64, not both")
    if cfg.ciphertext_b64:
        try:
            blob = base64.b64decode(cfg.ciphertext_b64, validate=True)
        except ValueError:
            raise bad("ciphertext_b64", "ciphertext_b64 is not base64") from None
        if not 1 <= len(blob) <= 6144:
            raise bad("ciphertext_b64", "ciphertext_b64 must decode to 1..6144 bytes")
    if (cfg.ciphertext or cfg.ciphertext_b64) and not cfg.key_id:
        # Decrypt works without KeyId, but pinning it stops a swapped ciphertext from another key
        raise bad("key_id", "key_id is required with ciphertext")
    if (
        cfg.kms_endpoint
        and cfg.kms_endpoint != "local"
        and not cfg.kms_endpoint.startswith(("http://", "https://"))
    ):
        raise bad("kms_endpoint", "kms_endpoint must be 'local' or an http(s) URL")
    if cfg.serve is not None:
        serve_host, _, serve_port = cfg.serve.rpartition(":")
        if not serve_host or not (serve_port.isascii() and serve_port.isdigit()) or not 0 <= int(serve_port) <= 65535:
            raise bad("serve", "serve must be HOST:PORT (e.g. 127.0.0.1:9181)")
    if cfg.source == "docker" and cfg.docker_uri is None and not cfg.metadata_uri:

        raise bad(
            "docker_uri",
            f"no image: set docker_uri, or run under ECS (${ENV_METADATA}), or source: payload",
        )


def load_config(
    path: Path | None,
    *,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> UpConfig:
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    where: dict[str, str] = {}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                raw = fh.read(MAX_CONFIG_BYTES + 1)
        except OSError as exc:
            raise ConfigError(f"cannot read the configuration: {exc.strerror}", where=str(path)) from exc
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(f"larger than {MAX_CONFIG_BYTES} bytes", where=str(path))
        try:
            doc = load_yaml(raw)
        except YamlRefused as exc:
            raise ConfigError(f"not accepted: {exc}", where=str(path)) from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" (line {mark.line + 1})" if mark is not None else ""
            raise ConfigError(f"not valid YAML{at}", where=str(path)) from exc
        if doc is None:
            doc = {}
        if not isinstance(doc, dict):
            raise ConfigError("the configuration must be a mapping of settings", where=str(path))
        for key, value in doc.items():
            name = str(key).replace("-", "_")
            if name not in _FIELDS:
                raise ConfigError(
                    f"unknown setting {str(key)[:60]!r}", where=str(path), hint=f"known: {', '.join(_FIELDS)}"
                )
            values[name] = _coerce(name, value, f"{path}: {name}")
            if name in PATH_FIELDS:
                values[name] = _absolute(values[name], Path(path).parent)
            where[name] = f"{path}: {name}"
    for name in _FIELDS:
        var = ENV_PREFIX + name.upper()
        if var in env:
            values[name] = _coerce(name, env[var], f"${var}")
            where[name] = f"${var}"
    if "metadata_uri" not in values and env.get(ENV_METADATA):
        values["metadata_uri"] = _coerce("metadata_uri", env[ENV_METADATA], f"${ENV_METADATA}")
        where["metadata_uri"] = f"${ENV_METADATA}"
    for name, value in (flags or {}).items():
        if name not in _FIELDS:
            raise ConfigError(f"unknown setting {name!r}", where="flags")
        flag = "--" + name.replace("_", "-")
        values[name] = _coerce(name, value, flag)
        where[name] = flag
    for name in PATH_FIELDS:
        if not where.get(name, "").startswith(f"{path}: "):  # from $NITRODECK_UP_* or a flag
            values[name] = _absolute(values.get(name), None)
    cfg = UpConfig(**values)
    _validate(cfg, where)
    return cfg
