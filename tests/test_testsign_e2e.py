"""End to end on the emulator: build the payload EIF, launch it, test-sign through the CLI and the library."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from console.cli import main
from core import home
from core.backends.registry import select_backend
from core.channel.bridge import Bridge, ListenAddress
from core.channel.protocol import ProtocolClient, ProtocolError
from core.eif.build import build_eif
from core.home import ensure
from core.models import ZERO_PCR, EnclaveInfo, LaunchRequest
from core.ops.lifecycle import EnclaveNotFound, Lifecycle
from core.ops.testsign import TestSignError, attest, test_sign
from emulator.instance import load_instance
from enclave_app.packaging import PAYLOAD_BUILD_TIME, payload_build_request
from tests.conftest import REPO

VENV_BIN = str(Path(sys.executable).parent)
ROLE_ARN = "arn:aws:iam::123456789012:role/Webserver"


@pytest.fixture
def world(nd_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Lifecycle, str]]:
    # The emulator starts the EIF's `python3` from the caller's PATH: make it this venv's.
    monkeypatch.setenv("PATH", VENV_BIN + os.pathsep + os.environ.get("PATH", ""))
    # room for two 2-CPU enclaves at once (the default pool holds one)
    ensure(home.emulator_etc()).joinpath("allocator.yaml").write_text("---\nmemory_mib: 768\ncpu_count: 4\n")
    eif = str(nd_home / "payload.eif")
    build_eif(payload_build_request(eif), build_time=PAYLOAD_BUILD_TIME)
    lifecycle = Lifecycle(select_backend("emulator"))
    try:
        yield lifecycle, eif
    finally:
        try:
            lifecycle.terminate_all()
        except Exception:  # noqa: BLE001 - kill_world cleans up whatever is left
            pass


def launch(lifecycle: Lifecycle, eif: str, name: str, debug: bool = False) -> EnclaveInfo:
    lifecycle.launch(LaunchRequest(eif_path=eif, memory_mib=256, cpu_count=2, debug_mode=debug, name=name))
    info = lifecycle.find(name)
    deadline = time.monotonic() + 30
    while True:  # ready when the payload answers health
        try:
            with lifecycle.backend.transport().connect(info.cid, 5005, timeout=2):
                return info
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"payload of {name} never listened") from None
            time.sleep(0.1)


@contextlib.contextmanager
def running_bridge(lifecycle: Lifecycle, cid: int) -> Iterator[int]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    bridge = Bridge(ListenAddress("127.0.0.1", 0), cid, 5005, lifecycle.backend.transport())
    asyncio.run_coroutine_threadsafe(bridge.start(), loop).result(10)
    try:
        yield bridge.port
    finally:
        asyncio.run_coroutine_threadsafe(bridge.stop(2), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def cli(*args: str, subprocess_run: bool = False) -> tuple[int, Any, str]:
    """`nitrodeck ARGS`: in this process (fast), or as a real subprocess when asked."""
    if subprocess_run:
        done = subprocess.run(
            [sys.executable, "-m", "console", *args],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=str(REPO),
        )
        status, stdout, stderr = done.returncode, done.stdout, done.stderr
    else:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(list(args))
        stdout, stderr = out.getvalue(), err.getvalue()
    try:
        data = json.loads(stdout) if "--json" in args else stdout
    except ValueError:
        data = stdout
    return status, data, stderr


def failed(report: dict[str, Any]) -> set[str]:
    return {c["name"] for c in report["checks"] if c["ok"] is False}


def test_sign_and_attest_on_the_emulator(world: tuple[Lifecycle, str], tmp_path: Path) -> None:
    lifecycle, eif = world
    built = lifecycle.describe_eif(eif).measurements
    # the modelled instance has an IAM role: PCR3 = SHA384(0^48 || role ARN), PCR4 from its instance ID
    instance = dataclasses.replace(load_instance(), iam_role_arn=ROLE_ARN)
    home.emulator_instance_file().write_text(instance.to_yaml())
    pcr3 = hashlib.sha384(bytes(48) + ROLE_ARN.encode()).hexdigest()
    pcr4 = hashlib.sha384(bytes(48) + instance.instance_id.encode()).hexdigest()
    prod = launch(lifecycle, eif, "prod")
    dbg = launch(lifecycle, eif, "dbg", debug=True)
    assert dbg.debug_mode

    status, report, err = cli("sign", "prod", "--payload", "hello enclave", "--json", subprocess_run=True)
    assert status == 0, (report, err)
    assert report["ok"] and not failed(report)
    for index, value in built.pcrs().items():
        assert report["pcrs"][str(index)] == value
    assert report["pcrs"]["3"] == pcr3 and report["pcrs"]["4"] == pcr4
    # the signature checks out with cryptography directly, not only with nitrodeck's own checks
    secp = serialization.load_der_public_key(bytes.fromhex(report["public_key"]))
    assert isinstance(secp, ec.EllipticCurvePublicKey) and isinstance(secp.curve, ec.SECP256K1)
    secp.verify(bytes.fromhex(report["signature"]), b"hello enclave", ec.ECDSA(hashes.SHA256()))
    assert report["payload_sha256"] == hashlib.sha256(b"hello enclave").hexdigest()
    assert report["enclave_id"] == prod.enclave_id and report["cid"] == prod.cid
    # the document of an emulated enclave is checked against the emulator root, and the report says why
    assert report["trusted_roots"] == ["aws-nitro-enclaves-root-g1 (built in: AWS Nitro Enclaves root G1)",
                                       "nitrodeck-emulator-test-root (the enclave is emulated (emulator backend))"]

    # the library path, other scheme, read-only lifecycle (test-sign changes nothing)
    ro = Lifecycle(select_backend("emulator"), read_only=True)
    ed = test_sign(ro, prod.enclave_id, b"\x00\x01binary", scheme="ed25519")
    assert ed.ok and ed.scheme == "ed25519" and len(bytes.fromhex(ed.signature)) == 64
    ed_key = serialization.load_der_public_key(bytes.fromhex(ed.public_key))
    assert isinstance(ed_key, Ed25519PublicKey)
    ed_key.verify(bytes.fromhex(ed.signature), b"\x00\x01binary")

    # through the TCP bridge (the ECS sidecar path), from another thread's event loop
    with running_bridge(lifecycle, prod.cid) as port:
        via = test_sign(lifecycle, "prod", b"over tcp", via=f"127.0.0.1:{port}")
    assert via.ok and via.via == f"tcp 127.0.0.1:{port}"

    status, text, _ = cli("--read-only", "attest", "prod")
    assert status == 0 and "✓ nonce" in text and "✗" not in text
    assert "trusted root: nitrodeck-emulator-test-root (the enclave is emulated (emulator backend))" in text

    wrong = {**built.pcrs(), 0: "ab" * 48}
    report_wrong = test_sign(lifecycle, "prod", b"x", expected_pcrs=wrong)
    assert not report_wrong.ok
    assert {c.name for c in report_wrong.checks if c.ok is False} == {"pcr0"}
    pcr_file = tmp_path / "pcrs.json"
    pcr_file.write_text(json.dumps({"PCR0": "ab" * 48}))
    status, text, _ = cli("sign", "prod", "--payload", "x", "--expect-pcrs", str(pcr_file))
    assert status == 3 and "✗ pcr0" in text

    status, report, _ = cli("sign", "dbg", "--payload", "x", "--json")
    assert status == 3
    assert {"debug mode", "pcr0", "pcr1", "pcr2"} <= failed(report)
    assert report["pcrs"]["0"] == ZERO_PCR
    assert report["pcrs"]["3"] == pcr3 and report["pcrs"]["4"] == pcr4  # debug mode keeps PCR3/4
    zeros = {0: ZERO_PCR, 1: ZERO_PCR, 2: ZERO_PCR}
    assert attest(lifecycle, "dbg", expected_pcrs=zeros).ok

    # from inside one enclave's environment, the other enclave is unreachable over vsock
    code = (
        "import sys\nfrom core.channel.vsock import from_env\n"
        "try:\n    from_env().connect(int(sys.argv[1]), 5005, timeout=5)\n"
        "except ConnectionRefusedError as exc:\n    print('refused', exc)\nelse:\n    print('connected')\n"
    )
    vsock_dir = str(lifecycle.backend.vsock_dir)
    env = {**os.environ, "NITRODECK_VSOCK_DIR": vsock_dir, "NITRODECK_ENCLAVE_CID": str(dbg.cid)}
    out = subprocess.run(
        [sys.executable, "-c", code, str(prod.cid)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        cwd=str(REPO),
    )
    assert out.stdout.startswith("refused"), out.stdout + out.stderr


def _payload_process(cid: int) -> psutil.Process:
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            env = proc.environ()
            cmdline = proc.cmdline()
        except (psutil.Error, OSError):
            continue
        if (
            env.get("NITRODECK_HOME") == str(home.home())
            and env.get("NITRODECK_ENCLAVE_CID") == str(cid)
            and cmdline[1:3] == ["-m", "enclave_app"]
        ):
            found.append(proc)
    assert len(found) == 1, [p.cmdline() for p in found]
    return found[0]


def test_100_clients_for_10_seconds(world: tuple[Lifecycle, str]) -> None:
    lifecycle, eif = world
    info = launch(lifecycle, eif, "busy")
    transport = lifecycle.backend.transport()

    async def client(i: int, stop_at: float) -> int:
        done = 0
        async with await ProtocolClient.connect_vsock(transport, info.cid, 5005, timeout=30) as c:
            for n in range(10_000):  # bounded in count as well as time
                if time.monotonic() >= stop_at:
                    break
                nonce = (i * 100_000 + n).to_bytes(8, "big")
                res = await c.call(
                    "sign", {"payload": b"p%d" % n, "scheme": "ed25519", "nonce": nonce}, timeout=60
                )
                assert isinstance(res["signature"], bytes) and len(res["signature"]) == 64
                done += 1
        return done

    async def run() -> list[Any]:
        stop_at = time.monotonic() + 10
        return await asyncio.gather(*(client(i, stop_at) for i in range(100)), return_exceptions=True)

    started = time.monotonic()
    results = asyncio.run(run())
    elapsed = time.monotonic() - started
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors[:3]
    total = sum(int(r) for r in results)
    assert all(int(r) >= 1 for r in results)  # every client got served
    print(f"\n100 clients: {total} signatures in {elapsed:.1f}s ({total / elapsed:.0f}/s), 0 errors")


def test_payload_killed_mid_request_then_relaunch(world: tuple[Lifecycle, str]) -> None:
    lifecycle, eif = world
    info = launch(lifecycle, eif, "victim")
    victim = _payload_process(info.cid)

    async def flood() -> list[Any]:
        async with await ProtocolClient.connect_vsock(lifecycle.backend.transport(), info.cid, 5005) as c:
            calls = [
                asyncio.create_task(
                    c.call("sign", {"payload": b"x", "nonce": i.to_bytes(4, "big")}, timeout=30)
                )
                for i in range(300)
            ]
            await asyncio.wait(calls, return_when=asyncio.FIRST_COMPLETED)
            victim.kill()  # mid-flight: most calls are still queued in the payload
            return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(flood())
    lost = [r for r in results if isinstance(r, ProtocolError)]
    assert lost and all("closed" in str(r) or "lost" in str(r) for r in lost)
    assert not [r for r in results if isinstance(r, BaseException) and not isinstance(r, ProtocolError)]

    # the operator-facing error is typed and says where to look
    # the payload is dead: test-sign must fail (two typed ways, depending on whether the emulator has
    # already reaped the enclave), never succeed
    with pytest.raises((TestSignError, EnclaveNotFound)) as caught:
        test_sign(lifecycle, info.enclave_id, b"again", timeout=10)
    if isinstance(caught.value, TestSignError):
        assert "console" in (caught.value.hint or "") or "payload" in (caught.value.hint or "")
    else:
        assert "no running enclave" in str(caught.value)
    status, out, err = cli("sign", info.enclave_id, "--payload", "x", "--json", subprocess_run=True)
    assert "Traceback" not in err and err.startswith("nitrodeck:")
    # the payload died mid-request (exit 1), or the enclave is already gone (nitro-cli's E11 status)
    assert (status, out["error"]["code"]) in {(1, "ND-TEST-SIGN"), (11, "ND-NO-ENCLAVE")}

    try:
        lifecycle.terminate(info.enclave_id)
    except Exception:  # noqa: BLE001 - already reaped by the emulator
        pass
    launch(lifecycle, eif, "victim2")
    assert test_sign(lifecycle, "victim2", b"fresh start").ok
