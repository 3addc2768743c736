"""The payload's protocol methods and the registry extension modules add theirs to.

A handler is ``handler(ctx, params) -> result`` (plain or ``async``); it raises
core.channel.protocol.ProtocolError (wire code ``bad-params``, ``too-large``...) for bad input. Extension
modules (enclave_app.kms) call :func:`register_method` at import time, and may add a start-up hook
with :func:`on_startup` to run once the key store and NSM are ready.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from core import __version__
from core.channel.protocol import (
    BAD_PARAMS,
    UNKNOWN_METHOD,
    VERSION,
    ProtocolError,
    require_bytes,
    require_str,
    sign_binding,
)
from enclave_app import console_log
from enclave_app.keys import SCHEMES, KeyStore

MAX_PAYLOAD = 64 * 1024
#: the NSM accepts up to 1024 bytes per field; strict verifiers allow 512 for nonce and user_data
MAX_NONCE = 512
MAX_USER_DATA = 512
MAX_PUBLIC_KEY = 1024
#: PCRs reported by health: the image (0, 1, 2), the parent's role and instance (3, 4), the signer (8)
HEALTH_PCRS = (0, 1, 2, 3, 4, 8)


class Nsm:
    """Blocking NSM calls, run one at a time on a dedicated thread so the event loop never stalls.

    ``client`` is a core.attest.nsm.NsmClient (or anything with get_random / attestation / describe_pcr).
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nsm")

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def get_random(self, n: int) -> bytes:
        return bytes(await self._run(self._client.get_random, n))

    async def attestation(
        self, user_data: bytes | None = None, nonce: bytes | None = None, public_key: bytes | None = None
    ) -> bytes:
        return bytes(await self._run(self._client.attestation, user_data, nonce, public_key))

    async def describe_pcr(self, index: int) -> bytes:
        return pcr_bytes(await self._run(self._client.describe_pcr, index))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        close = getattr(self._client, "close", None)
        if callable(close):
            close()


def pcr_bytes(value: Any) -> bytes:
    """DescribePCR's value, whatever shape the NSM client returns it in."""
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, Mapping):
        return bytes(value["data"])
    data = getattr(value, "data", None)
    if isinstance(data, bytes | bytearray):
        return bytes(data)
    if isinstance(value, tuple) and len(value) == 2:
        return bytes(value[1])
    raise TypeError(f"unexpected DescribePCR result {type(value).__name__}")


@dataclass
class EnclaveContext:
    """What every handler gets: the keys, the NSM, what the enclave saw at start-up."""

    keys: KeyStore
    nsm: Nsm
    pcrs: dict[int, str] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    log: Callable[[str], None] = field(default_factory=lambda: console_log.log)

    def __post_init__(self) -> None:
        self.log = console_log.never_raises(self.log)  # a log line never fails a request


Handler = Callable[[EnclaveContext, Mapping[str, Any]], Any]
StartupHook = Callable[[EnclaveContext], Any]

_METHODS: dict[str, Handler] = {}
_STARTUP: list[StartupHook] = []


def register_method(name: str, handler: Handler, *, replace: bool = False) -> None:
    """Add a protocol method. Names are unique unless ``replace`` (an extension overriding a built-in)."""
    if not name or len(name) > 64:
        raise ValueError("method names are 1..64 characters")
    if name in _METHODS and not replace:
        raise ValueError(f"method {name!r} is already registered")
    _METHODS[name] = handler


def unregister_method(name: str) -> None:
    """Remove a method (an extension being unloaded; tests)."""
    _METHODS.pop(name, None)


def on_startup(hook: StartupHook) -> None:
    _STARTUP.append(hook)


def method_names() -> list[str]:
    return sorted(_METHODS)


async def run_startup_hooks(ctx: EnclaveContext) -> None:
    for hook in list(_STARTUP):
        result = hook(ctx)
        if inspect.isawaitable(result):
            await result


async def call_method(ctx: EnclaveContext, method: str, params: Mapping[str, Any]) -> Any:
    handler = _METHODS.get(method)
    if handler is None:
        raise ProtocolError(f"unknown method {method[:64]!r}", wire_code=UNKNOWN_METHOD)
    result = handler(ctx, params)
    if inspect.isawaitable(result):
        result = await result
    return result


# --- built-in methods ---------------------------------------------------------------------------


async def _health(ctx: EnclaveContext, params: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "version": __version__,
        "protocol": VERSION,
        "uptime_s": round(time.monotonic() - ctx.started, 3),
        "pcrs": dict(ctx.pcrs),
        "schemes": list(SCHEMES),
        "key_source": ctx.keys.key_source,
        "methods": method_names(),
    }


async def _attest(ctx: EnclaveContext, params: Mapping[str, Any]) -> dict[str, Any]:
    nonce = require_bytes(params, "nonce", max_len=MAX_NONCE, optional=True)
    user_data = require_bytes(params, "user_data", max_len=MAX_USER_DATA, optional=True)
    public_key = require_bytes(params, "public_key", max_len=MAX_PUBLIC_KEY, optional=True)
    return {"document": await ctx.nsm.attestation(user_data, nonce, public_key)}


async def _public_keys(ctx: EnclaveContext, params: Mapping[str, Any]) -> dict[str, Any]:
    return dict(ctx.keys.public_keys())


async def _sign(ctx: EnclaveContext, params: Mapping[str, Any]) -> dict[str, Any]:
    payload = require_bytes(params, "payload", max_len=MAX_PAYLOAD)
    nonce = require_bytes(params, "nonce", max_len=MAX_NONCE)
    scheme = require_str(params, "scheme", choices=SCHEMES, default="secp256k1")
    assert payload is not None and nonce is not None
    if not nonce:
        raise ProtocolError("parameter 'nonce' must not be empty", wire_code=BAD_PARAMS)
    signature, public_key = ctx.keys.sign(scheme, payload)
    # public_key is set too, so verifiers that read the document's public_key field find the key
    # that signed; user_data binds it to this payload and this nonce.
    document = await ctx.nsm.attestation(sign_binding(public_key, payload, nonce), nonce, public_key)
    return {"scheme": scheme, "signature": signature, "public_key": public_key, "attestation": document}


register_method("health", _health)
register_method("attest", _attest)
register_method("public_keys", _public_keys)
register_method("sign", _sign)


def sizes(value: Any) -> int:
    """Total bytes of the byte and text strings in a message (for logs: sizes, never contents)."""
    if isinstance(value, bytes | bytearray | str):
        return len(value)
    if isinstance(value, Mapping):
        return sum(sizes(v) for v in value.values())
    if isinstance(value, list | tuple):
        return sum(sizes(v) for v in value)
    return 0


DispatchFn = Callable[[str, Mapping[str, Any]], Awaitable[Any]]
