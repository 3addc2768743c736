"""The payload's server: start-up (NSM, keys, PCRs, extensions), the vsock listener, request logs.

The console (stdout) is the only log: one flushed line per event, carrying method names, sizes and
durations only. Payload contents, signatures' inputs and key material are never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import os
import signal
import time
from collections.abc import Callable, Mapping
from typing import Any

from core import __version__
from core.channel.protocol import (
    BUSY,
    HEADER,
    MAX_FRAME,
    ConnectionActivity,
    ProtocolError,
    Response,
    encode_frame,
    error_for,
    longest_idle,
    serve_connection,
)
from core.channel.vsock import Transport, from_env
from core.errors import NitrodeckError
from enclave_app.console_log import log, never_raises
from enclave_app.keys import KeyStore
from enclave_app.methods import (
    HEALTH_PCRS,
    EnclaveContext,
    Nsm,
    call_method,
    method_names,
    run_startup_hooks,
    sizes,
)

DEFAULT_PORT = 5005
#: extension modules imported at start-up if they exist, so their methods register
EXTENSIONS = ("enclave_app.kms",)
STOP_GRACE = 5.0
#: connections served at once; more get a `busy` error frame and are closed (bounded memory)
MAX_CONNECTIONS = 256


class PayloadError(NitrodeckError):
    code = "ND-PAYLOAD"


def open_nsm() -> Any:
    try:
        from core.attest.nsm import NsmClient
    except ImportError as exc:
        raise PayloadError("core.attest.nsm is not available in this image", where="enclave start-up") from exc
    try:
        return NsmClient.open()
    except NitrodeckError:
        raise
    except OSError as exc:
        raise PayloadError(f"cannot open the NSM: {exc}", where="enclave start-up") from exc


def load_extensions(names: tuple[str, ...] = EXTENSIONS, logger: Callable[[str], None] = log) -> list[str]:
    loaded = []
    for name in names:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            logger(f"extension {name} failed to load: missing module {exc.name}")
            continue
        except Exception as exc:  # noqa: BLE001 - a broken extension must not take signing down
            logger(f"extension {name} failed to load: {type(exc).__name__}")
            continue
        loaded.append(name)
    return loaded


async def read_pcrs(nsm: Nsm) -> dict[int, str]:
    pcrs: dict[int, str] = {}
    for index in HEALTH_PCRS:
        try:
            pcrs[index] = (await nsm.describe_pcr(index)).hex()
        except (NitrodeckError, OSError, KeyError, TypeError) as exc:
            log(f"PCR{index}: unreadable ({type(exc).__name__})")
    return pcrs


def make_dispatch(ctx: EnclaveContext) -> Callable[[str, Mapping[str, Any]], Any]:
    async def dispatch(method: str, params: Mapping[str, Any]) -> Any:
        start = time.perf_counter()
        try:
            result = await call_method(ctx, method, params)
        except Exception as exc:
            code, _ = error_for(exc)
            ms = (time.perf_counter() - start) * 1000
            ctx.log(f"request method={method[:64]} in={sizes(params)}B error={code} {ms:.1f}ms")
            raise
        ms = (time.perf_counter() - start) * 1000
        ctx.log(f"request method={method} in={sizes(params)}B out={sizes(result)}B {ms:.1f}ms")
        return result

    return dispatch


async def serve(
    port: int = DEFAULT_PORT,
    *,
    nsm_client: Any | None = None,
    transport: Transport | None = None,
    stop: asyncio.Event | None = None,
    logger: Callable[[str], None] = log,
) -> None:
    logger = never_raises(logger)
    transport = transport or from_env()
    logger(f"starting version={__version__} pid={os.getpid()} cid={transport.own_cid} port={port}")
    nsm = Nsm(nsm_client if nsm_client is not None else open_nsm())
    try:
        keys = KeyStore.generate(await nsm.get_random(32))
        pcrs = await read_pcrs(nsm)
        for index, value in pcrs.items():
            logger(f"PCR{index} {value}")
        for name in load_extensions(logger=logger):
            logger(f"extension loaded: {name}")
        ctx = EnclaveContext(keys=keys, nsm=nsm, pcrs=pcrs, log=logger)
        await run_startup_hooks(ctx)
        dispatch = make_dispatch(ctx)

        def on_error(exc: ProtocolError) -> None:
            logger(f"connection dropped: {exc.wire_code}: {exc.message}")

        connections: dict[asyncio.Task[Any], ConnectionActivity] = {}

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if len(connections) >= MAX_CONNECTIONS and (victim := longest_idle(connections)) is not None:
                # fair admission: the longest-idle connection makes room; idle clients cannot
                # hold every slot while working ones are turned away
                connections.pop(victim, None)
                victim.cancel()
                logger("closed the longest-idle connection to admit a new one")
            if len(connections) >= MAX_CONNECTIONS:
                busy = Response(
                    None, error_code=BUSY, error_message=f"more than {MAX_CONNECTIONS} connections"
                )
                # Say why, stop sending, and swallow the client's first request for a moment so
                # its write does not hit a closed socket before it has read the answer.
                with contextlib.suppress(ConnectionError, OSError, RuntimeError, TimeoutError):
                    writer.write(encode_frame(busy.to_wire()))
                    await writer.drain()
                    writer.write_eof()
                    await asyncio.wait_for(reader.read(MAX_FRAME + HEADER.size), 1.0)
                writer.close()
                return
            task = asyncio.current_task()
            activity = ConnectionActivity()
            if task is not None:
                connections[task] = activity
            try:
                await serve_connection(reader, writer, dispatch, on_error=on_error, activity=activity)
            finally:
                if task is not None:
                    connections.pop(task, None)

        server = await transport.start_server(handle, port, limit=MAX_FRAME + HEADER.size)
        logger(
            f"listening on vsock port {port}; methods: {', '.join(method_names())}; keys: {keys.key_source}"
        )
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        logger("stopping")
        server.close()
        if connections:
            _, pending = await asyncio.wait(list(connections), timeout=STOP_GRACE)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
    finally:
        nsm.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m enclave_app", description="nitrodeck enclave payload")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="vsock port to listen on (default 5005)"
    )
    args = parser.parse_args(argv)
    if not 0 < args.port < 2**32:
        log(f"fatal: port {args.port} is out of range")
        return 2
    try:
        asyncio.run(serve(args.port))
    except NitrodeckError as err:
        log(f"fatal: {err}")
        return 1
    except OSError as err:
        log(f"fatal: {type(err).__name__}: {err}")
        return 1
    except KeyboardInterrupt:
        return 130
    log("stopped")
    return 0
