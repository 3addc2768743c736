"""`nitrodeck up` end to end on the emulator, the seed's flow:

task metadata (HTTP on 127.0.0.1, shaped like the v4 endpoint) -> `nitrodeck up` (a real process)
-> build + launch + bridge + vsock-proxy -> credentials -> the enclave gets its sealed key from KMS
with attestation -> test-sign through the bridge shows that key -> the enclave dies and is
relaunched and re-provisioned -> SIGTERM -> nothing left running.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import psutil
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from core.backends.registry import select_backend
from core.eif.measure import measure_eif
from core.kms.policy import key_policy
from core.ops.lifecycle import Lifecycle
from core.ops.testsign import test_sign as run_test_sign
from emulator.kms import LocalKms
from enclave_app.packaging import payload_request
from tests.conftest import REPO

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/signer:1.4.2"
ROLE_SECRET = "role-secret-never-logged"
AWS = {
    "AWS_ACCESS_KEY_ID": "AKIATESTING000000000",
    "AWS_SECRET_ACCESS_KEY": "testing-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class MetadataServer:
    """ECS task metadata v4 look-alike: GET ${uri} answers this container's JSON."""

    def __init__(self, image: str = IMAGE) -> None:
        self.image = image
        self.hits = 0
        self.credential_hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def do_GET(self) -> None:  # noqa: N802
                if self.path == "/creds":
                    outer.credential_hits += 1
                    expires = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
                    self._json(
                        {
                            "AccessKeyId": "ASIAROLECREDS0000000",
                            "SecretAccessKey": ROLE_SECRET,
                            "Token": "role-session-token",
                            "Expiration": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
                        }
                    )
                    return
                outer.hits += 1
                self._json(
                    {
                        "DockerId": "ea32192c8553fbff06c9340478a2ff089b2bb5646fb718b4ee206641c9086d66",
                        "Name": "signer",
                        "DockerName": "ecs-signer-1-signer-e4e7e6d4c1dab1a2f401",
                        "Image": outer.image,
                        "ImageID": "sha256:2ae34abc2ed0a22e280d17e13f9c01aaf725688b09b7a1525d1a2750e2c0d1de",
                        "Labels": {"com.amazonaws.ecs.cluster": "default"},
                        "DesiredStatus": "RUNNING",
                        "KnownStatus": "RUNNING",
                        "Type": "NORMAL",
                    }
                )

            def _json(self, doc: dict[str, Any]) -> None:
                body = json.dumps(doc).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
        )
        self.thread.start()

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v4/abc"

    @property
    def credentials_uri(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/creds"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def metadata() -> Iterator[MetadataServer]:
    server = MetadataServer()
    yield server
    server.close()


def _configure_emulator(home: Path) -> None:
    etc = home / "emulator" / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "allocator.yaml").write_text("---\nmemory_mib: 512\ncpu_count: 2\n")
    (home / "emulator" / "instance.yaml").write_text(
        "instance_id: i-0123456789abcdef0\nvcpus: 4\ncores: 2\nthreads_per_core: 2\nhugepage_sizes_kb: [2048]\n"
    )


def _run_up(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`nitrodeck up` with this environment, to the end (for runs that are meant to stop on their own)."""
    return subprocess.run(
        [sys.executable, "-m", "console", "up"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


class Events:
    """Reads `up`'s JSON-lines stdout on a thread; tests wait for events with a bound."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self.raw: list[str] = []
        assert proc.stdout is not None
        self.thread = threading.Thread(target=self._read, args=(proc.stdout,), daemon=True)
        self.thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.raw.append(line)
            try:
                self.lines.put(json.loads(line))
            except ValueError:
                continue

    def wait(self, event: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                record = self.lines.get(timeout=0.5)
            except queue.Empty:
                continue
            self.seen.append(record)
            if record.get("event") == "failed":
                raise AssertionError(f"up failed: {record}")
            if record.get("event") == event:
                return record
        raise AssertionError(f"no {event!r} event; saw {[r.get('event') for r in self.seen]}")


def check_ready(config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "console", "up", "--config", str(config), "--check-ready"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )


def test_up_seed_flow(nd_home: Path, metadata: MetadataServer, monkeypatch: pytest.MonkeyPatch) -> None:
    _configure_emulator(nd_home)
    for key, value in AWS.items():
        monkeypatch.setenv(key, value)
    # the emulated enclave runs `python3` from PATH: make it this interpreter's environment
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    lifecycle = Lifecycle(select_backend())
    eif = nd_home / "eifs" / "signer.eif"
    # the operator's side: measure the image, seal the wallet key to it (KMS runs on its own here)
    pcrs = lifecycle.build(payload_request(str(eif))).measurements.pcrs()
    wallet = ec.generate_private_key(ec.SECP256K1())
    spki = wallet.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with LocalKms() as kms:
        kms_client = boto3.client("kms", endpoint_url=kms.endpoint_url, region_name="us-east-1")
        arn = kms_client.create_key()["KeyMetadata"]["Arn"]
        kms_client.put_key_policy(
            KeyId=arn, PolicyName="default", Policy=json.dumps(key_policy(pcrs, "123456789012"))
        )
        sealed = nd_home / "wallet.kms"
        sealed.write_bytes(
            kms_client.encrypt(
                KeyId=arn, Plaintext=wallet.private_numbers().private_value.to_bytes(32, "big")
            )["CiphertextBlob"]
        )
        allow = nd_home / "vsock-proxy.yaml"
        allow.write_text(yaml.safe_dump({"allowlist": [{"address": "127.0.0.1", "port": kms.port}]}))
        config = nd_home / "up.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "source": "payload",
                    "eif_path": str(eif),
                    "cpu_count": 2,
                    "memory_mib": 128,
                    "cid": 21,
                    "bridge_listen": "127.0.0.1:0",
                    "kms_endpoint": kms.endpoint_url,
                    "proxy_config": str(allow),
                    "key_id": arn,
                    "ciphertext": str(sealed),
                    "check_interval": 0.3,
                    # an hour-long credential is "about to expire" at once: refresh on every check
                    "credentials_margin": 3599.0,
                    "backoff_initial": 0.2,
                    # the read-only agent, in up's own process
                    "serve": "127.0.0.1:0",
                }
            )
        )
        # the parent gets role credentials the ECS way (container credentials endpoint, with expiry)
        env = {k: v for k, v in os.environ.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
        env.update(
            ECS_CONTAINER_METADATA_URI_V4=metadata.uri,
            AWS_CONTAINER_CREDENTIALS_FULL_URI=metadata.credentials_uri,
            NITRODECK_UP_MEMORY_MIB="256",
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "console", "up", "--config", str(config), "--memory", "160"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            events = Events(proc)
            agent = events.wait("agent")["url"]  # serve: starts before anything is built
            meta = events.wait("metadata")
            assert meta["image"] == IMAGE and metadata.hits >= 1
            pinned = events.wait("pinned")  # what it built is pinned, under the EIF's image name
            launched = events.wait("launched")
            assert launched["cid"] == 21 and launched["memory_mib"] == 160  # flag beats env beats file
            assert launched["cpus"] == 2
            bridge = events.wait("bridge")
            provisioned = events.wait("provisioned")
            assert bytes.fromhex(provisioned["public_key"]) == spki
            ready = events.wait("ready")
            with urllib.request.urlopen(agent + "/metrics", timeout=20) as resp:
                metrics = resp.read().decode()
            assert f'nitrodeck_enclave_running{{enclave_id="{launched["enclave_id"]}"' in metrics
            refused = urllib.request.Request(agent + "/status", data=b"{}", method="POST")
            with pytest.raises(urllib.error.HTTPError) as post:
                urllib.request.urlopen(refused, timeout=20)
            assert post.value.code == 405
            # test-sign through the bridge (the seed's socat sidecar): the sealed key signs
            report = run_test_sign(lifecycle, launched["enclave_id"], b"transfer 1 BTC", via=bridge["listen"])
            assert report.ok, [c for c in report.checks if not c.ok]
            assert report.public_key == spki.hex()

            # role credentials are refreshed before they expire, from the credentials endpoint
            # (the first hit handed the launch its credentials; a refresh may already have come while
            # test-sign ran, so count from the start, not from here)
            refreshed = events.wait("credentials")
            assert refreshed["expires"] and metadata.credential_hits >= 2
            # the container healthCheck's question: ready file, live `up`, enclave answering through the bridge
            check = check_ready(config, env)
            assert check.returncode == 0, check.stdout + check.stderr
            assert check.stdout.startswith(f"ready: {ready['enclave_id']} answers through {bridge['listen']}")

            # the enclave dies: up relaunches it and provisions the key again
            lifecycle.terminate(launched["enclave_id"])
            events.wait("enclave-exited")
            again = events.wait("provisioned")
            assert bytes.fromhex(again["public_key"]) == spki
            restarted = events.wait("restarted")
            assert restarted["enclave_id"] != launched["enclave_id"]
            # the journal: the terminate (not an exit), then the supervisor's relaunch; the new enclave is
            # judged against the pin `up` made
            journal = lifecycle.journal.read()
            [restart] = [e for e in journal if e.event == "restarted"]
            assert restart.enclave_id == restarted["enclave_id"] and restart.get("previous_enclave_id") == launched["enclave_id"]
            assert restart.pcr0 == pinned["PCR0"] and not [e for e in journal if e.event == "exited"]
            [again_running] = [e for e in lifecycle.describe(metadata=True) if e.enclave_id == restarted["enclave_id"]]
            judged = lifecycle.judge(again_running, record=False)
            assert (judged.verdict, judged.key) == ("match", pinned["pin"])
            # the same bridge reaches the new enclave, which signs with the same sealed key
            report = run_test_sign(lifecycle, restarted["enclave_id"], b"after restart", via=bridge["listen"])
            assert report.ok and report.public_key == spki.hex()

            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0
            stopped = check_ready(config, env)
            assert stopped.returncode == 1 and "does not exist" in stopped.stdout
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        events.thread.join(5)
        names = [json.loads(line).get("event") for line in events.raw if line.startswith("{")]
        assert names[-3:] == ["stopping", "terminated", "stopped"]
        # no secrets in the logs
        everything = "".join(events.raw) + (proc.stderr.read() if proc.stderr else "")
        assert ROLE_SECRET not in everything and "role-session-token" not in everything
        assert wallet.private_numbers().private_value.to_bytes(32, "big").hex() not in everything
    # nothing left running: no enclave, no process of this home
    assert lifecycle.describe() == []
    mine = []
    for p in psutil.process_iter(["pid"]):
        try:
            if p.environ().get("NITRODECK_HOME") == str(nd_home) and p.pid != os.getpid():
                mine.append(p)
        except (psutil.Error, OSError):
            continue
    assert mine == []


def test_up_refuses_a_kms_target_outside_the_allowlist(nd_home: Path) -> None:
    allow = nd_home / "vsock-proxy.yaml"
    allow.write_text("allowlist:\n- {address: kms.us-east-1.amazonaws.com, port: 443}\n")
    config = nd_home / "up.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "source": "payload",
                "kms_endpoint": "http://127.0.0.1:9",
                "proxy_config": str(allow),
                "memory_mib": 128,
            }
        )
    )
    res = subprocess.run(
        [sys.executable, "-m", "console", "up", "--config", str(config)],
        cwd=REPO,
        env={**os.environ, **AWS},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 1
    records = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    failed = [r for r in records if r["event"] == "failed"]
    assert failed and "not allowed" in failed[0]["error"]
    assert "launched" not in [r["event"] for r in records]  # refused before any enclave started


def test_up_exits_and_cleans_up_when_kms_refuses_the_image(
    nd_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key sealed to other measurements: up says why, leaves no enclave behind, and fails."""
    _configure_emulator(nd_home)
    for key, value in AWS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    with LocalKms() as kms:
        client = boto3.client("kms", endpoint_url=kms.endpoint_url, region_name="us-east-1")
        arn = client.create_key()["KeyMetadata"]["Arn"]
        other = {0: "11" * 48, 1: "22" * 48, 2: "33" * 48}
        client.put_key_policy(
            KeyId=arn, PolicyName="default", Policy=json.dumps(key_policy(other, "123456789012"))
        )
        blob = client.encrypt(KeyId=arn, Plaintext=b"\x05" * 32)["CiphertextBlob"]
        allow = nd_home / "vsock-proxy.yaml"
        allow.write_text(yaml.safe_dump({"allowlist": [{"address": "127.0.0.1", "port": kms.port}]}))
        env = {
            **os.environ,
            "NITRODECK_UP_SOURCE": "payload",
            "NITRODECK_UP_MEMORY_MIB": "128",
            "NITRODECK_UP_KMS_ENDPOINT": kms.endpoint_url,
            "NITRODECK_UP_PROXY_CONFIG": str(allow),
            "NITRODECK_UP_KEY_ID": arn,
            "NITRODECK_UP_CIPHERTEXT_B64": base64.b64encode(blob).decode(),
            "NITRODECK_UP_BRIDGE_LISTEN": "127.0.0.1:0",
        }
        res = _run_up(env)
    records = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    failed = [r for r in records if r["event"] == "failed"]
    assert res.returncode == 1 and failed[0]["code"] == "ND-REMOTE"  # the enclave relays KMS's refusal
    assert failed and "AccessDeniedException" in failed[0]["error"] and "do not match" in failed[0]["error"]
    assert [r["event"] for r in records][-2:] == ["terminated", "stopped"]
    assert Lifecycle(select_backend()).describe() == []


def test_up_backs_off_and_gives_up_when_relaunches_keep_failing(
    nd_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key policy is re-pinned to another image while up runs: each relaunch is refused by
    KMS and torn down, the waits double, and after max_restarts up exits non-zero."""
    _configure_emulator(nd_home)
    for key, value in AWS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    eif = nd_home / "eifs" / "signer.eif"
    pcrs = Lifecycle(select_backend()).build(payload_request(str(eif))).measurements.pcrs()
    with LocalKms() as kms:
        client = boto3.client("kms", endpoint_url=kms.endpoint_url, region_name="us-east-1")
        arn = client.create_key()["KeyMetadata"]["Arn"]
        client.put_key_policy(
            KeyId=arn, PolicyName="default", Policy=json.dumps(key_policy(pcrs, "123456789012"))
        )
        blob = client.encrypt(KeyId=arn, Plaintext=b"\x09" * 32)["CiphertextBlob"]
        allow = nd_home / "vsock-proxy.yaml"
        allow.write_text(yaml.safe_dump({"allowlist": [{"address": "127.0.0.1", "port": kms.port}]}))
        env = {
            **os.environ,
            "NITRODECK_UP_SOURCE": "payload",
            "NITRODECK_UP_EIF_PATH": str(eif),
            "NITRODECK_UP_MEMORY_MIB": "128",
            "NITRODECK_UP_KMS_ENDPOINT": kms.endpoint_url,
            "NITRODECK_UP_PROXY_CONFIG": str(allow),
            "NITRODECK_UP_KEY_ID": arn,
            "NITRODECK_UP_CIPHERTEXT_B64": base64.b64encode(blob).decode(),
            "NITRODECK_UP_BRIDGE_LISTEN": "127.0.0.1:0",
            "NITRODECK_UP_CHECK_INTERVAL": "0.2",
            "NITRODECK_UP_BACKOFF_INITIAL": "0.1",
            "NITRODECK_UP_BACKOFF_MAX": "0.3",
            "NITRODECK_UP_MAX_RESTARTS": "3",
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "console", "up"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            events = Events(proc)
            launched = events.wait("ready")
            other = {**pcrs, 2: "ee" * 48}
            client.put_key_policy(
                KeyId=arn, PolicyName="default", Policy=json.dumps(key_policy(other, "123456789012"))
            )
            Lifecycle(select_backend()).terminate(launched["enclave_id"])
            # the first relaunch is refused by KMS and torn down; then the EIF goes away too, so the
            # later attempts fail at launch, quickly (an attempt that races ahead is refused by KMS)
            events.wait("restart-failed")
            eif.unlink()
            assert proc.wait(120) == 1
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        events.thread.join(5)
    records = [json.loads(line) for line in events.raw if line.startswith("{")]
    waits = [r["restart_in"] for r in records if r["event"] == "enclave-exited"]
    assert waits == [0.1, 0.2, 0.3]  # doubling, capped at backoff_max
    failures = [r for r in records if r["event"] == "restart-failed"]
    assert len(failures) == 3 and "do not match" in failures[0]["error"]
    names = [r["event"] for r in records]
    assert "giving-up" in names and "terminate-failed" not in names  # nothing left to terminate
    assert Lifecycle(select_backend()).describe() == []


@pytest.mark.docker
def test_up_builds_this_containers_image_through_docker(nd_home: Path, docker_client: Any) -> None:
    """source: docker (the ECS default): the image named by the task metadata is built into the EIF
    through the Docker socket and its measurements are reported. This image's entry point is no
    nitrodeck payload, so the enclave never answers: up says so, cleans up and fails."""
    _configure_emulator(nd_home)
    ctx = nd_home / "ctx"
    ctx.mkdir()
    (ctx / "hello").write_text("not a payload\n")
    (ctx / "Dockerfile").write_text('FROM scratch\nCOPY hello /hello\nENTRYPOINT ["/hello"]\n')
    tag = f"nd-up-test-{uuid.uuid4().hex[:10]}:v1"
    docker_client.images.build(path=str(ctx), tag=tag, rm=True)
    server = MetadataServer(image=tag)
    allow = nd_home / "vsock-proxy.yaml"
    allow.write_text("allowlist:\n- {address: 127.0.0.1, port: 9}\n")
    eif = nd_home / "eifs" / "task.eif"
    env = {
        **os.environ,
        **AWS,
        "ECS_CONTAINER_METADATA_URI_V4": server.uri,
        "NITRODECK_UP_EIF_PATH": str(eif),
        "NITRODECK_UP_MEMORY_MIB": "128",
        "NITRODECK_UP_CID": "23",
        "NITRODECK_UP_READY_TIMEOUT": "2",
        "NITRODECK_UP_KMS_ENDPOINT": "http://127.0.0.1:9",
        "NITRODECK_UP_PROXY_CONFIG": str(allow),
        "NITRODECK_UP_BRIDGE_LISTEN": "127.0.0.1:0",
    }
    try:
        res = _run_up(env)
    finally:
        server.close()
        try:
            docker_client.images.remove(tag, force=True)
        except Exception:  # noqa: BLE001 - best effort cleanup of our own tag
            pass
    records = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    by_event = {r["event"]: r for r in records}
    assert by_event["metadata"]["image"] == tag and server.hits >= 1
    assert by_event["build"]["image"] == tag
    measured = measure_eif(eif)
    assert by_event["measurements"]["PCR0"] == measured.pcr0
    assert by_event["measurements"]["PCR2"] == measured.pcr2
    # the image carries no payload: its enclave either never signals that it booted (nitro-cli's E36,
    # exit 36) or boots and never answers within ready_timeout (ND-UP, exit 1), depending on timing
    assert (res.returncode, by_event["failed"]["code"]) in {(36, "E36"), (1, "ND-UP")}
    assert [r["event"] for r in records][-1] == "stopped"
    assert Lifecycle(select_backend()).describe() == []


# --- SIGTERM at every stage, on the real backend (the stand-in nitro-cli of tests/fake_nitro_cli) --------


def _up_on_a_parent(nd_home: Path, monkeypatch: pytest.MonkeyPatch, **knobs: Any) -> tuple[Any, subprocess.Popen[str], Events]:
    """`nitrodeck up` on the real backend against the stand-in nitro-cli; knobs slow a stage down."""
    from tests.real_world import make_world

    world = make_world(nd_home, monkeypatch)
    world.set_knobs(docker_images={"registry.example/app:1": str(world.eif())}, **knobs)
    allow = nd_home / "vsock-proxy.yaml"  # the real default is /etc/nitro_enclaves/vsock-proxy.yaml
    allow.write_text(yaml.safe_dump({"allowlist": [{"address": "127.0.0.1", "port": 9}]}))
    env = {
        **world.env,
        "NITRODECK_UP_SOURCE": "docker",
        "NITRODECK_UP_DOCKER_URI": "registry.example/app:1",
        "NITRODECK_UP_EIF_PATH": str(nd_home / "eifs" / "up.eif"),
        "NITRODECK_UP_MEMORY_MIB": "128",
        "NITRODECK_UP_CID": "21",
        "NITRODECK_UP_BRIDGE_LISTEN": "127.0.0.1:0",
        # a vsock port of its own (AF_VSOCK is shared by the whole machine), and no network: KMS on loopback
        "NITRODECK_UP_PROXY_PORT": str(20000 + os.getpid() % 20000),
        "NITRODECK_UP_KMS_ENDPOINT": "http://127.0.0.1:9",
        "NITRODECK_UP_PROXY_CONFIG": str(allow),
        "NITRODECK_UP_READY_TIMEOUT": "300",
    }
    proc = subprocess.Popen([sys.executable, "-m", "console", "up"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    return world, proc, Events(proc)


def _stopped_cleanly(world: Any, proc: subprocess.Popen[str], events: Events, nd_home: Path) -> list[str]:
    """SIGTERM -> exit 0, `stopped` last, no failure logged, no enclave and no process of this home left."""
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(60) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    events.thread.join(5)
    names = [json.loads(line).get("event") for line in events.raw if line.startswith("{")]
    assert names[-1] == "stopped" and "failed" not in names, names
    assert world.state()["enclaves"] == [] and world.free_pages() == 256  # nothing held any more
    leftover = []
    for p in psutil.process_iter(["pid"]):
        try:
            if p.environ().get("NITRODECK_HOME") == str(nd_home) and p.pid != os.getpid():
                leftover.append(p.cmdline())
        except (psutil.Error, OSError):
            continue
    assert leftover == []
    return names


def _stage_reached(world: Any, command: str) -> int:
    """Wait until the stand-in nitro-cli runs ``command`` (its delay marker); its PID."""
    marker = Path(f"{world.state_file}.{command}.started")
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return int(marker.read_text())


@pytest.mark.docker  # up checks that the Docker daemon answers before a docker-source build
def test_sigterm_while_building_kills_the_build(
    nd_home: Path, monkeypatch: pytest.MonkeyPatch, docker_client: object
) -> None:
    world, proc, events = _up_on_a_parent(nd_home, monkeypatch, delay={"build-enclave": 600})
    events.wait("build")
    builder = _stage_reached(world, "build-enclave")
    names = _stopped_cleanly(world, proc, events, nd_home)
    assert names[-3:] == ["interrupted", "stopping", "stopped"] and "launched" not in names
    assert not psutil.pid_exists(builder)  # the 600 s build did not outlive up


@pytest.mark.docker  # up checks that the Docker daemon answers before a docker-source build
def test_sigterm_while_launching_terminates_what_was_launched(
    nd_home: Path, monkeypatch: pytest.MonkeyPatch, docker_client: object
) -> None:
    world, proc, events = _up_on_a_parent(nd_home, monkeypatch, delay={"run-enclave": 3})
    events.wait("proxy")
    assert _stage_reached(world, "run-enclave") > 0
    names = _stopped_cleanly(world, proc, events, nd_home)
    # the launch finished (its enclave exists on the parent), so it is terminated before up exits
    assert names[-4:] == ["launched", "stopping", "terminated", "stopped"]


@pytest.mark.docker  # up checks that the Docker daemon answers before a docker-source build
def test_sigterm_while_waiting_for_ready_is_not_a_timeout(
    nd_home: Path, monkeypatch: pytest.MonkeyPatch, docker_client: object
) -> None:
    world, proc, events = _up_on_a_parent(nd_home, monkeypatch)
    launched = events.wait("launched")
    events.wait("bridge")  # then up waits for the payload's health answer, which never comes here
    assert world.state()["enclaves"][0]["EnclaveID"] == launched["enclave_id"]
    names = _stopped_cleanly(world, proc, events, nd_home)
    assert names[-3:] == ["stopping", "terminated", "stopped"] and "ready" not in names
