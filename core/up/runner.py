"""`nitrodeck up`: the ECS parent container's bootstrap and supervisor (the seed's flow, in one process).

1. find this container's image (ECS task metadata v4), build the EIF from it (or the payload
   under the emulator), report the measurements;
2. start the KMS vsock-proxy (8000 -> KMS) and launch the enclave with the configured CPUs, memory
   and CID, then the TCP -> vsock bridge (8888 -> enclave 5005);
3. hand in AWS credentials, provision the sealed key (KMS releases it to the attested enclave);
4. supervise: refresh credentials before they expire, relaunch the enclave with exponential
   backoff when it exits; on SIGTERM terminate the enclave, stop the bridge and proxy, exit 0.

Logs are JSON lines on stdout: events, IDs, measurements, timings. Never credentials or keys.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
import os
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from core import home
from core.errors import ConfigError, NitrodeckError, ReadOnlyError
from core.up.config import UpConfig

MAX_METADATA = 256 * 1024
METADATA_TIMEOUT = 5.0


class UpError(NitrodeckError):
    code = "ND-UP"


# --- logging ----------------------------------------------------------------------------------------


class JsonLog:
    """One JSON object per line. Callers pass only non-secret fields."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def __call__(self, event: str, **fields: Any) -> None:
        record = {
            "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            "event": event,
            **fields,
        }
        self.stream.write(json.dumps(record, default=str) + "\n")
        self.stream.flush()


# --- ECS task metadata ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContainerMetadata:
    image: str
    image_id: str | None
    name: str | None


def container_metadata(uri: str, timeout: float = METADATA_TIMEOUT) -> ContainerMetadata:
    """GET ${ECS_CONTAINER_METADATA_URI_V4}: this container's metadata (Image, ImageID, Name...)."""
    if not uri.startswith(("http://", "https://")):
        raise ConfigError("the task metadata URI must be http(s)", where="ECS_CONTAINER_METADATA_URI_V4")
    try:
        with urllib.request.urlopen(uri, timeout=timeout) as resp:
            raw = resp.read(MAX_METADATA + 1)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise UpError(f"cannot read the ECS task metadata: {exc}", where=uri) from exc
    return parse_container_metadata(raw, uri)


def parse_container_metadata(raw: bytes, where: str = "task metadata") -> ContainerMetadata:
    if len(raw) > MAX_METADATA:
        raise UpError(f"task metadata larger than {MAX_METADATA} bytes", where=where)
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise UpError("task metadata is not JSON", where=where) from exc
    image = data.get("Image") if isinstance(data, dict) else None
    if not isinstance(image, str) or not image or len(image) > 1024:
        raise UpError("task metadata has no Image for this container", where=where)
    image_id = data.get("ImageID")
    name = data.get("Name")
    return ContainerMetadata(
        image, image_id if isinstance(image_id, str) else None, name if isinstance(name, str) else None
    )


# --- readiness: what the container's healthCheck asks ------------------------------------------------

MAX_READY_BYTES = 4096
READY_TIMEOUT = 3.0


def ready_file(name: str) -> Path:
    """``$NITRODECK_HOME/up/<name>.ready``: present only while `up` serves (after "ready", until the
    enclave exits or `up` stops). On ECS, NITRODECK_HOME is a volume, so the host sees it too."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in name)[:64] or "up"
    return home.home() / "up" / f"{safe}.ready"


def write_ready(name: str, enclave_id: str | None, cid: int | None, bridge: str) -> Path:
    path = ready_file(name)
    home.ensure(path.parent)
    record = {
        "pid": os.getpid(),
        "enclave_id": enclave_id,
        "cid": cid,
        "bridge": bridge,
        "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(record) + "\n")
    tmp.replace(path)  # whole-file replace: a health check reads the old record or the new one
    return path


def clear_ready(name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        ready_file(name).unlink()


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reason: str
    enclave_id: str | None = None


def check_ready(name: str, timeout: float = READY_TIMEOUT) -> Readiness:
    """Ready = `up` said so (its ready file), that `up` still runs, and the enclave answers `health`
    through the bridge now. Bounded by ``timeout``; never raises for what it finds."""
    from core.channel.protocol import BlockingClient

    path = ready_file(name)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_READY_BYTES + 1)
        record = json.loads(raw) if len(raw) <= MAX_READY_BYTES else None
    except FileNotFoundError:
        return Readiness(False, f"not ready: {path} does not exist (up is starting, restarting or stopped)")
    except (OSError, ValueError) as exc:
        return Readiness(False, f"not ready: {path} is unreadable: {exc}")
    if not isinstance(record, dict) or not isinstance(record.get("pid"), int) or not isinstance(record.get("bridge"), str):
        return Readiness(False, f"not ready: {path} is not a ready record")
    enclave_id = record.get("enclave_id") if isinstance(record.get("enclave_id"), str) else None
    try:
        os.kill(record["pid"], 0)
    except ProcessLookupError:
        return Readiness(False, f"not ready: up (pid {record['pid']}) is gone", enclave_id)
    except PermissionError:
        pass  # alive, another user's
    host, _, port = record["bridge"].rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as sock, \
                BlockingClient(sock) as client:
            client.call("health", {}, timeout=timeout)
    except (OSError, ValueError, NitrodeckError) as exc:
        return Readiness(False, f"not ready: the enclave does not answer through {record['bridge']}: {exc}", enclave_id)
    return Readiness(True, f"ready: {enclave_id} answers through {record['bridge']}", enclave_id)


# --- the supervisor ---------------------------------------------------------------------------------


def _kms_target(cfg: UpConfig) -> tuple[str, int]:
    if cfg.kms_endpoint:
        parts = urlsplit(cfg.kms_endpoint)
        if not parts.hostname:
            raise ConfigError("kms_endpoint has no host", where="kms_endpoint")
        return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    return f"kms.{cfg.region}.amazonaws.com", 443


#: (listen HOST:PORT, token file or None) -> (its URL, a function that stops it); raises NitrodeckError
AgentFactory = Callable[[str, str | None], tuple[str, Callable[[], None]]]


class Up:
    """All the moving parts of one `up` run; ``run()`` returns the exit status."""

    def __init__(
        self,
        cfg: UpConfig,
        backend_flag: str | None = None,
        log: Callable[..., None] | None = None,
        credentials: Callable[[], Any] | None = None,
        payload: Any = None,
        agent: AgentFactory | None = None,
    ) -> None:
        from core.backends.registry import select_backend
        from core.ops.lifecycle import Lifecycle

        self.cfg = cfg
        self.log = log or JsonLog()
        #: starts the read-only agent for ``serve:`` (the console's; core knows no HTTP front end)
        self.agent = agent
        self._stop_agent: Callable[[], None] | None = None
        self.lifecycle = Lifecycle(select_backend(backend_flag), payload=payload)
        self.backend = self.lifecycle.backend
        self._credentials_source = credentials
        self.stop_event = asyncio.Event()
        #: set with stop_event while a build runs: the build's process group is killed (a build can
        #: take many minutes; a launch is never cut short, its enclave is terminated afterwards instead)
        self.cancel_build = threading.Event()
        self.stage = "starting"
        self.enclave_id: str | None = None
        self.cid: int | None = None
        self.local_kms: Any = None
        self.proxy: Any = None
        self.bridge: Any = None
        self.credentials: Any = None
        self.restarts = 0
        self.public_key: bytes | None = None

    # -- pieces

    def _image(self) -> str:
        if self.cfg.docker_uri:
            return self.cfg.docker_uri
        assert self.cfg.metadata_uri is not None
        meta = container_metadata(self.cfg.metadata_uri)
        self.log("metadata", image=meta.image, image_id=meta.image_id, container=meta.name)
        return meta.image

    def build(self) -> None:
        from core.models import BuildRequest

        eif = self.cfg.eif()
        eif.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        if self.cfg.source == "payload":
            if self.cfg.metadata_uri:
                # report which task image this is, even though nothing can be pulled here
                self._image()
            req = BuildRequest(output_file=str(eif), payload=True)
            image = "nitrodeck payload"
        else:
            image = self._image()
            req = BuildRequest(output_file=str(eif), docker_uri=image)
        self.log("build", image=image, eif=str(eif))
        self.lifecycle.driver.cancel = self.cancel_build
        try:
            result = self.lifecycle.build(req)
        finally:
            self.lifecycle.driver.cancel = None
        self.log(
            "measurements",
            eif=result.output_file,
            seconds=round(time.monotonic() - started, 2),
            **{f"PCR{i}": v for i, v in result.measurements.pcrs().items()},
        )
        # pin what was measured, so the enclave up runs is judged against the image it built
        try:
            pin = self.lifecycle.pin_eif(result.output_file, None if self._has_image_name(result.output_file) else self.cfg.name)
            self.log("pinned", pin=pin.key, PCR0=pin.pcrs.get(0))
        except NitrodeckError as exc:
            self.log("pin-failed", error=exc.message, where=exc.where)

    def _has_image_name(self, eif: str) -> bool:
        try:
            return bool(self.lifecycle.describe_eif(eif).image_name)
        except NitrodeckError:
            return False

    def _start_agent(self) -> None:
        if self.agent is None:
            raise ConfigError("this nitrodeck cannot run the agent in-process", where="serve",
                              hint="run `nitrodeck serve` beside it instead")
        assert self.cfg.serve is not None
        url, self._stop_agent = self.agent(self.cfg.serve, self.cfg.serve_token_file)
        self.log("agent", url=url)

    def start_proxy(self) -> None:
        from core.channel.proxy import AllowEntry, VsockProxy

        allowlist = None
        config = Path(self.cfg.proxy_config) if self.cfg.proxy_config else None
        if self.cfg.kms_endpoint == "local":
            self.local_kms = self.backend.start_local_kms()
            if self.local_kms is None:
                raise ConfigError(
                    f"the {self.backend.name} backend has no local KMS",
                    where="kms_endpoint: local",
                    hint="use the regional KMS endpoint (leave kms_endpoint empty)",
                )
            host, port = "127.0.0.1", self.local_kms.port
            allowlist = [AllowEntry(host, port)]  # the local KMS is the only place the proxy may go
            self.log("local-kms", endpoint=self.local_kms.endpoint_url)
        else:
            host, port = _kms_target(self.cfg)
        self.proxy = VsockProxy(
            self.cfg.proxy_port,
            host,
            port,
            transport=self.backend.transport(),
            allowlist=allowlist,
            config=config,
            workers=self.cfg.proxy_workers,
        ).start()
        self.log("proxy", vsock_port=self.cfg.proxy_port, remote=f"{host}:{port}")

    async def start_bridge(self) -> None:
        from core.channel.bridge import Bridge, ListenAddress

        assert self.cid is not None
        host, port = self.cfg.bridge_address()
        self.bridge = Bridge(
            ListenAddress(host, port), self.cid, self.cfg.enclave_port, self.backend.transport()
        )
        await self.bridge.start()
        self.log(
            "bridge", listen=f"{host}:{self.bridge.port}", cid=self.cid, vsock_port=self.cfg.enclave_port
        )

    def launch(self) -> None:
        from core.models import LaunchRequest

        info = self.lifecycle.launch(
            LaunchRequest(
                eif_path=str(self.cfg.eif()),
                memory_mib=self.cfg.memory_mib,
                cpu_count=self.cfg.cpu_count,
                cid=self.cfg.cid,
                debug_mode=self.cfg.debug_mode,
                name=self.cfg.name,
            )
        )
        self.enclave_id, self.cid = info.enclave_id, info.cid
        if self.bridge is not None and self.bridge.cid != info.cid:
            # an auto-assigned CID can change across relaunches; the bridge follows it
            self.bridge.cid = info.cid
        self.log(
            "launched",
            enclave_id=info.enclave_id,
            cid=info.cid,
            cpus=info.cpu_count,
            memory_mib=info.memory_mib,
        )

    def running(self) -> bool:
        if self.enclave_id is None:
            return False
        try:
            enclaves = self.lifecycle.describe()
        except NitrodeckError:
            return False
        return any(e.enclave_id == self.enclave_id and e.state.upper() == "RUNNING" for e in enclaves)

    def _call(self, method: str, params: dict[str, Any], timeout: float = 30.0) -> Any:
        from core.channel.protocol import BlockingClient

        assert self.cid is not None
        try:
            sock = self.backend.transport().connect(self.cid, self.cfg.enclave_port, timeout=10)
        except OSError as exc:
            # the enclave may have just exited; the supervisor decides what to do about it
            raise UpError(f"cannot reach the enclave for {method}: {exc}", where=f"vsock {self.cid}") from exc
        with BlockingClient(sock) as client:
            return client.call(method, params, timeout=timeout)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.cfg.ready_timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.stop_event.is_set():
                return  # SIGTERM while waiting: not a timeout; run() stops and cleans up
            try:
                self._call("health", {}, timeout=5)
                return
            except (NitrodeckError, OSError) as exc:
                last = exc
                time.sleep(0.2)
        raise UpError(f"the enclave did not answer within {self.cfg.ready_timeout:g}s: {last}", where="up")

    def _fresh_credentials(self) -> Any:
        from core.kms.client import session_credentials

        if self._credentials_source is not None:
            return self._credentials_source()
        return session_credentials(self.cfg.region)

    def hand_credentials(self) -> None:
        self.credentials = self._fresh_credentials()
        self._call("set_credentials", self.credentials.to_wire(), timeout=10)
        exp = self.credentials.expiration
        self.log("credentials", expires=exp.isoformat() if exp else None)

    def provision(self) -> None:
        from core.ops.provision import provision_params, read_ciphertext

        if self.cfg.ciphertext_b64:
            blob = base64.b64decode(self.cfg.ciphertext_b64)
        elif self.cfg.ciphertext:
            blob = read_ciphertext(Path(self.cfg.ciphertext))
        else:
            self.log("provision-skipped", reason="no ciphertext configured")
            return
        params = provision_params(
            blob,
            key_id=self.cfg.key_id,
            region=self.cfg.region,
            proxy_port=self.cfg.proxy_port,
        )
        started = time.monotonic()
        result = self._call("provision", params, timeout=90)
        self.public_key = bytes(result.get("public_key", b""))
        self.log(
            "provisioned",
            key_id=result.get("key_id"),
            public_key=self.public_key.hex(),
            seconds=round(time.monotonic() - started, 2),
        )

    def bring_up_enclave(self) -> None:
        self.launch()
        try:
            self.wait_ready()
            self.hand_credentials()
            self.provision()
        except NitrodeckError:
            # never leave an enclave serving with a key other than the sealed one
            self.terminate_quietly()
            raise

    def terminate_quietly(self) -> None:
        if self.enclave_id is None:
            return
        with contextlib.suppress(NitrodeckError):
            self.lifecycle.terminate(self.enclave_id)
        # gone either way: shutdown must not try (and log a failure) to terminate it again
        self.enclave_id = None

    def refresh_due(self) -> bool:
        creds = self.credentials
        if creds is None or creds.expiration is None:
            return False
        left = creds.seconds_left()
        return left is not None and left <= self.cfg.credentials_margin

    # -- the run

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop_event.wait(), seconds)

    async def supervise(self) -> int:
        backoff = self.cfg.backoff_initial
        failures = 0
        while not self.stop_event.is_set():
            await self._sleep(self.cfg.check_interval)
            if self.stop_event.is_set():
                break
            if await asyncio.to_thread(self.running):
                failures = 0
                backoff = self.cfg.backoff_initial
                if self.refresh_due():
                    try:
                        await asyncio.to_thread(self.hand_credentials)
                    except NitrodeckError as exc:
                        self.log("credentials-refresh-failed", error=exc.message)
                continue
            clear_ready(self.cfg.name)
            self.log("enclave-exited", enclave_id=self.enclave_id, restart_in=backoff)
            await self._sleep(backoff)
            if self.stop_event.is_set():
                break
            backoff = min(backoff * 2, self.cfg.backoff_max)
            try:
                previous = self.enclave_id
                await asyncio.to_thread(self.terminate_quietly)
                await asyncio.to_thread(self.bring_up_enclave)
                self.restarts += 1
                # journal first, then say so: whoever reads the event line finds it in the journal
                launch = self.lifecycle.journal.launch_of(self.enclave_id) if self.enclave_id else None
                self.lifecycle.journal.append(
                    "restarted",
                    enclave_id=self.enclave_id,
                    name=self.cfg.name,
                    eif_path=str(self.cfg.eif()),
                    pcr0=launch.pcr0 if launch else None,
                    previous_enclave_id=previous,
                    restarts=self.restarts,
                )
                self.log("restarted", enclave_id=self.enclave_id, restarts=self.restarts)
                self._mark_ready()
            except NitrodeckError as exc:
                failures += 1
                self.log("restart-failed", error=exc.message, where=exc.where, failures=failures)
            except Exception as exc:  # noqa: BLE001 - the supervisor outlives one bad iteration
                failures += 1
                self.log("restart-failed", error=f"unexpected {type(exc).__name__}", failures=failures)
            if failures and self.cfg.max_restarts and failures >= self.cfg.max_restarts:
                self.log("giving-up", failures=failures)
                return 1
        return 0

    def _mark_ready(self) -> None:
        host, port = self.cfg.bridge_address()
        if self.bridge is not None:
            port = self.bridge.port
        try:
            write_ready(self.cfg.name, self.enclave_id, self.cid, f"{host}:{port}")
        except OSError as exc:  # serving matters more than the health check's file
            self.log("ready-file-failed", error=exc.strerror or str(exc))

    async def shutdown(self) -> None:
        clear_ready(self.cfg.name)
        self.log("stopping", enclave_id=self.enclave_id)
        if self.bridge is not None:
            with contextlib.suppress(Exception):
                await self.bridge.stop()
        if self.enclave_id is not None:
            try:
                await asyncio.to_thread(self.lifecycle.terminate, self.enclave_id)
                self.log("terminated", enclave_id=self.enclave_id)
            except NitrodeckError as exc:
                self.log("terminate-failed", error=exc.message)
        if self.proxy is not None:
            await asyncio.to_thread(self.proxy.stop)
        if self.local_kms is not None:
            await asyncio.to_thread(self.local_kms.stop)
        self.log("stopped")

    def _on_signal(self) -> None:
        self.stop_event.set()
        if self.stage == "build":
            self.cancel_build.set()

    async def run(self) -> int:
        """SIGTERM (or SIGINT) at any stage ends with exit 0, a `stopped` event and nothing left
        running: a build is killed, a launch finishes and its enclave is terminated, the wait for
        ready stops waiting; whatever a step raises once the stop was asked for is the stop's doing."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal)
        status = 1
        try:
            self.log(
                "starting", backend=self.backend.name, config={k: v for k, v in self.cfg.as_dict().items()}
            )
            if self.cfg.serve:
                self._start_agent()
            steps: list[tuple[str, Callable[[], Any]]] = [

                ("build", self.build), ("proxy", self.start_proxy), ("launch", self.launch)
            ]
            for name, step in steps:
                if self.stop_event.is_set():  # SIGTERM during start-up: skip the rest, clean up
                    return 0
                self.stage = name
                await asyncio.to_thread(step)
            if self.stop_event.is_set():
                return 0
            self.stage = "bridge"
            await self.start_bridge()
            for name, step in (("wait-ready", self.wait_ready), ("credentials", self.hand_credentials),
                               ("provision", self.provision)):
                if self.stop_event.is_set():
                    return 0
                self.stage = name
                await asyncio.to_thread(step)
            if self.stop_event.is_set():
                return 0
            self.stage = "steady"
            self.log("ready", enclave_id=self.enclave_id, cid=self.cid)
            self._mark_ready()
            status = await self.supervise()
        except NitrodeckError as exc:
            if self.stop_event.is_set():
                # e.g. the build killed by the stop: what failed is the stop's doing, not a failure
                self.log("interrupted", stage=self.stage, error=exc.message, code=exc.code)
                status = 0
            else:
                self.log("failed", error=exc.message, where=exc.where, code=exc.code)
                status = exc.exit_status or 1
        finally:
            await self.shutdown()
            if self._stop_agent is not None:
                self._stop_agent()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        return status


def run_up(cfg: UpConfig, backend_flag: str | None = None, read_only: bool = False, payload: Any = None,
           agent: AgentFactory | None = None) -> int:
    if read_only:
        # up exists to launch and provision; say so before building anything
        raise ReadOnlyError(
            "up launches and provisions enclaves, and nitrodeck runs read-only",
            where="up",
            hint="restart without --read-only",
        )
    return asyncio.run(Up(cfg, backend_flag, payload=payload, agent=agent).run())
