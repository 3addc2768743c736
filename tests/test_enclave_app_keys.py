"""enclave_app.keys and the method registry: key material stays inside, a KMS key can replace it."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from core.attest.nsm import NsmClient
from core.channel.protocol import ProtocolClient, ProtocolError, RemoteError
from core.channel.vsock import PARENT_CID, Transport
from emulator.nsm import EmulatedNsm, start_nsm_server
from enclave_app import server
from enclave_app.keys import KeyStore, KeyStoreError
from enclave_app.methods import EnclaveContext, register_method, unregister_method


@contextlib.asynccontextmanager
async def inprocess_payload(root: Path, cid: int, logs: list[str]) -> AsyncIterator[None]:
    """enclave_app.server.serve() on this event loop, with an emulated NSM on a real socket."""
    nsm = EmulatedNsm(f"i-0123456789abcdef0-enc{cid:016x}", {}, False, "i-0123456789abcdef0", None)
    nsm_path = root / f"nsm-{cid}.sock"
    nsm_server = start_nsm_server(nsm, nsm_path)
    stop = asyncio.Event()
    task = asyncio.create_task(
        server.serve(
            5005,
            nsm_client=NsmClient.open(socket_path=str(nsm_path)),
            transport=Transport(cid, root / "vsock"),
            stop=stop,
            logger=logs.append,
        )  # fmt: skip
    )
    try:
        for _ in range(250):
            if any("listening" in line for line in logs) or task.done():
                break
            await asyncio.sleep(0.02)
        assert not task.done(), logs
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        nsm_server.close()


def _store() -> KeyStore:
    return KeyStore.generate(os.urandom(32))


def test_generated_keys_are_fresh_and_sign() -> None:
    a, b = _store(), _store()
    assert a.public_keys() != b.public_keys()
    sig, pub = a.sign("secp256k1", b"msg")
    key = serialization.load_der_public_key(pub)
    assert isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256K1)
    key.verify(sig, b"msg", ec.ECDSA(hashes.SHA256()))
    assert pub == a.public_key_der("secp256k1")
    with pytest.raises(KeyStoreError):
        a.sign("rsa", b"msg")
    with pytest.raises(KeyStoreError):
        KeyStore.generate(b"short")
    assert "PRIVATE" not in repr(a) and "secp256k1" in repr(a)


def test_nsm_random_is_mixed_into_both_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the OS RNG pinned, the NSM's bytes alone decide the keys: they are really in the seed."""
    import enclave_app.keys as keys_module

    monkeypatch.setattr(keys_module.os, "urandom", lambda n: b"\x01" * n)
    same = KeyStore.generate(b"\x02" * 32).public_keys()
    assert KeyStore.generate(b"\x02" * 32).public_keys() == same
    other = KeyStore.generate(b"\x03" * 32).public_keys()
    assert other["secp256k1"] != same["secp256k1"] and other["ed25519"] != same["ed25519"]


def test_set_signing_key_accepts_object_der_and_scalar() -> None:
    store = _store()
    released = ec.generate_private_key(ec.SECP256K1())
    der = released.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())  # fmt: skip
    scalar = released.private_numbers().private_value.to_bytes(32, "big")
    want = released.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)  # fmt: skip
    for form in (released, der, scalar):
        fresh = _store()
        fresh.set_signing_key(form)
        assert fresh.public_key_der("secp256k1") == want and fresh.key_source == "kms"
    with pytest.raises(KeyStoreError, match="secp256k1"):
        store.set_signing_key(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(KeyStoreError, match="out of range"):
        store.set_signing_key(b"\xff" * 32)
    assert store.key_source == "generated"


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_set_signing_key_fuzz(data: bytes) -> None:
    store = _store()
    before = store.public_key_der("secp256k1")
    try:
        store.set_signing_key(data)
    except KeyStoreError:
        assert store.public_key_der("secp256k1") == before
        return
    assert len(data) == 32  # only a valid scalar can get through


async def test_an_extension_method_can_install_a_released_key(nd_home: Path) -> None:
    """What enclave_app.kms does: register a method that swaps in a key; sign then uses it."""
    released = ec.generate_private_key(ec.SECP256K1())
    scalar = released.private_numbers().private_value.to_bytes(32, "big")

    def install(ctx: EnclaveContext, params: Mapping[str, Any]) -> dict[str, Any]:
        ctx.keys.set_signing_key(scalar)
        return {"installed": True}

    register_method("test_install_key", install, replace=True)
    logs: list[str] = []
    try:
        async with inprocess_payload(nd_home, 21, logs):
            parent = Transport(PARENT_CID, nd_home / "vsock")
            async with await ProtocolClient.connect_vsock(parent, 21, 5005) as client:
                assert (await client.call("health"))["key_source"] == "generated"
                assert await client.call("test_install_key") == {"installed": True}
                health = await client.call("health")
                res = await client.call("sign", {"payload": b"p", "nonce": b"n"})
                with pytest.raises(RemoteError):
                    await client.call("sign", {"payload": b"p", "nonce": b""})
            assert health["key_source"] == "kms" and "test_install_key" in health["methods"]
            released.public_key().verify(res["signature"], b"p", ec.ECDSA(hashes.SHA256()))
            assert scalar.hex() not in "\n".join(logs)
    finally:
        unregister_method("test_install_key")


async def test_connection_cap_answers_busy(nd_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server, "MAX_CONNECTIONS", 2)
    async with inprocess_payload(nd_home, 22, []):
        parent = Transport(PARENT_CID, nd_home / "vsock")
        held = [await ProtocolClient.connect_vsock(parent, 22, 5005) for _ in range(2)]
        for c in held:
            assert (await c.call("health"))["schemes"]
        extra = await ProtocolClient.connect_vsock(parent, 22, 5005)
        with pytest.raises(ProtocolError, match="busy"):
            await extra.call("health", timeout=5)
        await extra.close()
        await held[0].close()
        await asyncio.sleep(0.1)
        async with await ProtocolClient.connect_vsock(parent, 22, 5005) as again:
            assert (await again.call("health"))["schemes"]
        await held[1].close()
