"""The enclave payload as a real process in an emulated enclave environment (vsock dir, NSM socket)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from core import home
from core.channel.protocol import BAD_PARAMS, TOO_LARGE, UNKNOWN_METHOD, ProtocolClient, RemoteError
from core.channel.vsock import PARENT_CID, Transport
from core.crypto import cose
from emulator.nsm import EmulatedNsm, NsmServer, start_nsm_server
from tests.conftest import REPO

IMAGE_PCRS = {0: b"\x20" * 48, 1: b"\x21" * 48, 2: b"\x22" * 48, 8: b"\x28" * 48}
PORT = 5005


@dataclass
class Payload:
    """One payload process in its own emulated enclave environment."""

    proc: subprocess.Popen[bytes]
    nsm: EmulatedNsm
    nsm_server: NsmServer
    vsock_dir: Path
    cid: int
    console: Path

    @property
    def parent(self) -> Transport:
        return Transport(PARENT_CID, self.vsock_dir)

    def console_text(self) -> str:
        return self.console.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.nsm_server.close()


def start_payload(root: Path, *, cid: int = 16, debug: bool = False, port: int = PORT) -> Payload:
    """Start ``python -m enclave_app`` the way the emulator's supervisor would, and wait until it listens."""
    vsock_dir = root / "vsock"
    vsock_dir.mkdir(exist_ok=True)
    nsm = EmulatedNsm(
        f"i-0123456789abcdef0-enc{cid:016x}", dict(IMAGE_PCRS), debug, "i-0123456789abcdef0", None
    )
    nsm_path = root / f"nsm-{cid}.sock"
    server = start_nsm_server(nsm, nsm_path)
    console = root / f"console-{cid}.log"
    env = dict(os.environ)
    env.update(
        NITRODECK_VSOCK_DIR=str(vsock_dir),
        NITRODECK_ENCLAVE_CID=str(cid),
        NITRODECK_NSM_SOCKET=str(nsm_path),
        PYTHONPATH=str(REPO),
    )
    with console.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "enclave_app", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(root),
        )
    payload = Payload(proc, nsm, server, vsock_dir, cid, console)
    deadline = time.monotonic() + 20
    while "listening on vsock port" not in payload.console_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            payload.stop()
            raise AssertionError(f"payload did not start:\n{payload.console_text()}")
        time.sleep(0.05)
    return payload


@pytest.fixture
def payload(nd_home: Path) -> Iterator[Payload]:
    p = start_payload(nd_home)
    try:
        yield p
    finally:
        p.stop()


def document_fields(document: bytes) -> tuple[cose.Sign1, Mapping[str, Any]]:
    """Decode an attestation document and check its COSE signature against its own leaf certificate."""
    sign1 = cose.decode(document)
    fields = cbor2.loads(sign1.payload)
    leaf = x509.load_der_x509_certificate(fields["certificate"])
    key = leaf.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert sign1.verify(key)
    return sign1, fields


def verify_signature(scheme: str, public_der: bytes, signature: bytes, payload: bytes) -> None:
    key = serialization.load_der_public_key(public_der)
    if scheme == "secp256k1":
        assert isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256K1)
        key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
    else:
        assert isinstance(key, Ed25519PublicKey)
        key.verify(signature, payload)


async def _client(p: Payload) -> ProtocolClient:
    return await ProtocolClient.connect_vsock(p.parent, p.cid, PORT)


async def test_sign_both_schemes_and_attest(payload: Payload) -> None:
    async with await _client(payload) as client:
        health = await client.call("health")
        keys = await client.call("public_keys")
        results = {}
        for scheme in ("secp256k1", "ed25519"):
            nonce = os.urandom(32)
            body = f"transfer 10 coins via {scheme} MARKER-7f3a".encode()
            results[scheme] = (
                nonce,
                body,
                await client.call("sign", {"payload": body, "scheme": scheme, "nonce": nonce}),
            )
    assert health["schemes"] == ["secp256k1", "ed25519"]
    assert health["key_source"] == "generated"
    assert health["pcrs"][0] == IMAGE_PCRS[0].hex() and health["pcrs"][8] == IMAGE_PCRS[8].hex()
    assert {"health", "attest", "public_keys", "sign"} <= set(health["methods"])
    for scheme, (nonce, body, result) in results.items():
        assert result["public_key"] == keys[scheme]
        verify_signature(scheme, result["public_key"], result["signature"], body)
        with pytest.raises(Exception):  # noqa: B017 - cryptography's InvalidSignature
            verify_signature(scheme, result["public_key"], result["signature"], body + b"!")
        _, fields = document_fields(result["attestation"])
        assert fields["nonce"] == nonce
        assert fields["public_key"] == result["public_key"]
        expect = hashlib.sha256(result["public_key"] + hashlib.sha256(body).digest() + nonce).digest()
        assert fields["user_data"] == expect
        assert fields["pcrs"][0] == IMAGE_PCRS[0]
    console = payload.console_text()
    assert "method=sign" in console and "PCR0 " + IMAGE_PCRS[0].hex() in console
    assert "MARKER-7f3a" not in console  # payload contents are never logged


async def test_attest_and_bad_input_are_typed(payload: Payload) -> None:
    async with await _client(payload) as client:
        doc = (await client.call("attest", {"nonce": b"n" * 16, "user_data": b"u"}))["document"]
        _, fields = document_fields(doc)
        assert fields["nonce"] == b"n" * 16 and fields["user_data"] == b"u" and fields["public_key"] is None
        cases = [
            ("sign", {"payload": b"x" * (64 * 1024 + 1), "nonce": b"n"}, TOO_LARGE),
            ("sign", {"payload": b"x", "nonce": b"n", "scheme": "rsa"}, BAD_PARAMS),
            ("sign", {"payload": "text, not bytes", "nonce": b"n"}, BAD_PARAMS),
            ("sign", {"payload": b"x"}, BAD_PARAMS),
            ("attest", {"nonce": b"n" * 513}, TOO_LARGE),
            ("no_such_method", {}, UNKNOWN_METHOD),
        ]
        for method, params, code in cases:
            with pytest.raises(RemoteError) as info:
                await client.call(method, params)
            assert info.value.remote_code == code, (method, params.keys())
        assert (await client.call("health"))["version"]


async def test_debug_enclave_attests_zero_pcrs(nd_home: Path) -> None:
    p = start_payload(nd_home, cid=21, debug=True)
    try:
        async with await _client(p) as client:
            result = await client.call("sign", {"payload": b"p", "scheme": "ed25519", "nonce": b"n"})
        _, fields = document_fields(result["attestation"])
        assert fields["pcrs"][0] == bytes(48) and fields["pcrs"][8] == bytes(48)
    finally:
        p.stop()


def test_enclave_to_enclave_is_refused(payload: Payload) -> None:
    other = Transport(own_cid=payload.cid + 1, emulated_dir=payload.vsock_dir)
    with pytest.raises(ConnectionRefusedError):
        other.connect(payload.cid, PORT, timeout=5)
    # the parent still gets through
    payload.parent.connect(payload.cid, PORT, timeout=5).close()


async def test_many_concurrent_connections_and_graceful_stop(payload: Payload) -> None:
    async def one(i: int) -> bool:
        async with await _client(payload) as client:
            nonce = i.to_bytes(4, "big")
            res = await client.call(
                "sign", {"payload": b"%d" % i, "scheme": "ed25519", "nonce": nonce}, timeout=30
            )
            verify_signature("ed25519", res["public_key"], res["signature"], b"%d" % i)
            return True

    assert all(await asyncio.gather(*(one(i) for i in range(40))))
    payload.proc.terminate()
    assert payload.proc.wait(10) == 0
    assert "stopping" in payload.console_text()


def test_missing_nsm_is_a_clear_startup_error(nd_home: Path) -> None:
    env = dict(os.environ, NITRODECK_VSOCK_DIR=str(nd_home), NITRODECK_ENCLAVE_CID="30", PYTHONPATH=str(REPO))
    env.pop("NITRODECK_NSM_SOCKET", None)
    out = subprocess.run(
        [sys.executable, "-m", "enclave_app"], env=env, capture_output=True, timeout=30, cwd=str(nd_home)
    )
    assert out.returncode == 1
    assert b"fatal:" in out.stdout and b"NSM" in out.stdout and b"Traceback" not in out.stdout + out.stderr
    assert home.home() == nd_home
