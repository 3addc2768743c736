"""The NSM client against the emulator's NSM over a real Unix socket, and EmulatedNsm's own rules."""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.attest import nsm as nsm_client
from core.attest.document import parse_document
from core.attest.nsm import (
    DeviceTransport,
    NsmClient,
    NsmError,
    NsmTransportError,
    SocketTransport,
    decode_response,
)
from emulator.nsm import MAX_REQUEST, EmulatedNsm, pcr_from_string, start_nsm_server
from emulator.pki import EmulatorPki
from tests.conftest import scratch_dir

MODULE_ID = "i-0123456789abcdef0-enc0191cceb4289903f"
ROLE = "arn:aws:iam::123456789012:role/Webserver"
PCR3_VECTOR = (
    "78fce75db17cd4e0a3fb8dad3ad128ca5e77edbb2b2c7f75329dccd99aa5f6ef4fc1f1a452e315b9e98f9e312e6921e6"
)
PCR4_VECTOR = (
    "08f996b5d43e047a9eb51e7f548bfee7e164fd7dc8f65541f2ac09d6545ac812719327281c401a67a10fcba87ae79ce0"
)
IMAGE_PCRS = {0: b"\x10" * 48, 1: b"\x11" * 48, 2: b"\x12" * 48, 8: b"\x18" * 48}


@pytest.fixture(scope="module")
def pki() -> Iterator[EmulatorPki]:
    with scratch_dir("nd-nsm-pki-") as etc:
        yield EmulatorPki.load_or_create(etc)


@pytest.fixture
def nsm(pki: EmulatorPki) -> EmulatedNsm:
    return EmulatedNsm(MODULE_ID, dict(IMAGE_PCRS), False, "i-1234567890abcdef0", ROLE, pki)


@pytest.fixture
def served(nsm: EmulatedNsm) -> Iterator[tuple[EmulatedNsm, Path]]:
    with scratch_dir("nd-nsm-") as folder:  # short: the socket's path must fit AF_UNIX's 107 bytes
        path = folder / "nsm.sock"
        server = start_nsm_server(nsm, path)
        try:
            yield nsm, path
        finally:
            server.close()


def test_pcr3_pcr4_vectors() -> None:
    assert pcr_from_string(ROLE).hex() == PCR3_VECTOR
    assert pcr_from_string("i-1234567890abcdef0").hex() == PCR4_VECTOR


def test_boot_pcrs_and_debug_zeroing(pki: EmulatorPki) -> None:
    normal = EmulatedNsm(MODULE_ID, dict(IMAGE_PCRS), False, "i-1234567890abcdef0", ROLE, pki)
    assert normal.pcr(0) == IMAGE_PCRS[0] and normal.pcr(8) == IMAGE_PCRS[8]
    assert normal.pcr(3).hex() == PCR3_VECTOR and normal.pcr(4).hex() == PCR4_VECTOR
    debug = EmulatedNsm(MODULE_ID, dict(IMAGE_PCRS), True, "i-1234567890abcdef0", None, pki)
    for index in (0, 1, 2, 3, 8):
        assert debug.pcr(index) == bytes(48)
    assert debug.pcr(4).hex() == PCR4_VECTOR  # PCR4 stays set in debug mode, as on real hardware
    assert debug.locked() == list(range(16))


def test_client_every_request_over_socket(served: tuple[EmulatedNsm, Path]) -> None:
    nsm, path = served
    with NsmClient(SocketTransport(path)) as client:
        desc = client.describe_nsm()
        assert (desc.version_major, desc.version_minor, desc.version_patch) == (1, 0, 0)
        assert desc.max_pcrs == 32 and desc.digest == "SHA384" and desc.module_id == MODULE_ID
        assert desc.locked_pcrs == list(range(16))

        pcr4 = client.describe_pcr(4)
        assert pcr4.lock is True and pcr4.data.hex() == PCR4_VECTOR
        assert client.describe_pcr(20).lock is False and client.describe_pcr(20).data == bytes(48)

        new = client.extend_pcr(20, b"hello")
        assert new == hashlib.sha384(bytes(48) + b"hello").digest()
        assert client.extend_pcr(20, b"again") == hashlib.sha384(new + b"again").digest()
        client.lock_pcr(20)
        assert client.describe_pcr(20).lock is True
        client.lock_pcrs(18)
        assert 17 in client.describe_nsm().locked_pcrs

        a, b = client.get_random(300), client.get_random(300)
        assert len(a) == 300 and a != b
        assert client.get_random(0) == b""

        doc = client.attestation(user_data=b"u", nonce=b"n" * 1024, public_key=None)
        assert doc[:1] == b"\x84" and len(doc) > 3000


@pytest.mark.parametrize(
    ("call", "code"),
    [
        (lambda c: c.extend_pcr(3, b"x"), "ReadOnlyIndex"),
        (lambda c: c.lock_pcr(0), "ReadOnlyIndex"),
        (lambda c: c.describe_pcr(32), "InvalidIndex"),
        (lambda c: c.extend_pcr(40, b"x"), "InvalidIndex"),
        (lambda c: c.lock_pcrs(33), "InvalidIndex"),
        (lambda c: c.call({"Frobnicate": {}}, "Frobnicate"), "InvalidOperation"),
        (lambda c: c.call({"Attestation": {"nonce": "text"}}, "Attestation"), "InvalidArgument"),
        (lambda c: c.call({"Attestation": {"user_data": b"x" * 1025}}, "Attestation"), "InvalidArgument"),
    ],
)
def test_client_errors_are_typed(served: tuple[EmulatedNsm, Path], call, code: str) -> None:  # type: ignore[no-untyped-def]
    _, path = served
    with NsmClient(SocketTransport(path)) as client:
        with pytest.raises(NsmError) as info:
            call(client)
        assert info.value.nsm_code == code
        # the connection survives an error answer
        assert client.describe_pcr(0).lock is True


def test_client_refuses_oversized_before_sending(served: tuple[EmulatedNsm, Path]) -> None:
    _, path = served
    with NsmClient(SocketTransport(path)) as client:
        with pytest.raises(NsmError) as info:
            client.attestation(user_data=b"x" * 1025)
        assert info.value.nsm_code == "InvalidArgument"
        with pytest.raises(NsmError) as info:
            client.extend_pcr(16, b"x" * 5000)
        assert info.value.nsm_code == "InputTooLarge"
    assert client.transport is not None


def test_server_answers_raw_oversized_frame(served: tuple[EmulatedNsm, Path]) -> None:
    _, path = served
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        body = cbor2.dumps({"ExtendPCR": {"index": 16, "data": b"x" * MAX_REQUEST}})
        sock.sendall(struct.pack(">I", len(body)) + body)
        (length,) = struct.unpack(">I", sock.recv(4, socket.MSG_WAITALL))
        assert cbor2.loads(sock.recv(length, socket.MSG_WAITALL)) == {"Error": "InputTooLarge"}


def test_concurrent_clients_extend_consistently(served: tuple[EmulatedNsm, Path]) -> None:
    nsm, path = served
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with NsmClient(SocketTransport(path)) as client:
                for _ in range(10):
                    client.extend_pcr(25, b"x")
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    expected = bytes(48)
    for _ in range(60):  # same data each time, so order does not matter
        expected = hashlib.sha384(expected + b"x").digest()
    assert nsm.pcr(25) == expected


def test_open_picks_env_socket_or_fails_typed(served: tuple[EmulatedNsm, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    _, path = served
    missing = Path("/nonexistent/nsm")
    monkeypatch.setenv(nsm_client.ENV_SOCKET, str(path))
    with NsmClient.open(device=missing) as client:
        assert client.describe_pcr(4).data.hex() == PCR4_VECTOR
    monkeypatch.delenv(nsm_client.ENV_SOCKET)
    with pytest.raises(NsmTransportError):
        NsmClient.open(device=missing)


def test_device_transport_on_non_device_is_typed(tmp_path: Path) -> None:
    fake = tmp_path / "nsm"
    fake.write_bytes(b"")
    transport = DeviceTransport(fake)  # a regular file: the ioctl itself must fail cleanly
    try:
        with pytest.raises(NsmTransportError):
            NsmClient(transport).describe_nsm()
    finally:
        transport.close()


def test_ioctl_number_matches_struct_nsm_raw() -> None:
    """_IOWR(0x0A, 0, struct nsm_raw): direction, type, number and the struct's size are all encoded."""
    import ctypes

    code = nsm_client.NSM_IOCTL_RAW
    assert code == 0xC0200A00
    assert code >> 30 == 3 and (code >> 8) & 0xFF == 0x0A and code & 0xFF == 0
    assert (code >> 16) & 0x3FFF == ctypes.sizeof(nsm_client._NsmRaw) == 32  # two {u64 addr, u64 len}
    assert nsm_client.MAX_RESPONSE == 12 * 1024 and nsm_client.MAX_REQUEST == 4096


def test_decode_response_shapes() -> None:
    assert decode_response(cbor2.dumps("LockPCR"), "LockPCR") is None
    with pytest.raises(NsmError) as info:
        decode_response(cbor2.dumps({"Error": "InvalidIndex"}), "DescribePCR")
    assert info.value.nsm_code == "InvalidIndex"
    with pytest.raises(NsmTransportError):
        decode_response(b"\x00" * 0x3001, "DescribePCR")
    with pytest.raises(NsmTransportError):
        decode_response(cbor2.dumps({"GetRandom": {"random": b""}}), "DescribePCR")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=64) | st.builds(cbor2.dumps, st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12) | st.binary(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=3),
    max_leaves=8,
)))
def test_fuzz_response_decoder(data: bytes) -> None:
    for expected in ("DescribeNSM", "DescribePCR", "LockPCR"):
        try:
            body = decode_response(data, expected)
            if expected == "DescribeNSM" and body is not None:
                nsm_client.parse_describe_nsm(body)
        except (NsmError, NsmTransportError):
            pass


_requests = st.one_of(
    st.binary(max_size=80),
    st.sampled_from(["DescribeNSM", "GetRandom", "LockPCR", "nope"]).map(cbor2.dumps),
    st.builds(
        lambda name, args: cbor2.dumps({name: args}),
        st.sampled_from(["DescribePCR", "ExtendPCR", "LockPCR", "LockPCRs", "Attestation", "X"]),
        st.dictionaries(
            st.sampled_from(["index", "range", "data", "nonce", "user_data", "public_key"]),
            st.none() | st.booleans() | st.integers(-5, 70000) | st.binary(max_size=40) | st.text(max_size=5),
            max_size=3,
        ) | st.integers() | st.none(),
    ),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_requests)
def test_fuzz_emulated_nsm_handle_never_raises(nsm: EmulatedNsm, request: bytes) -> None:
    answer = cbor2.loads(nsm.handle(request))
    assert isinstance(answer, str | dict)
    if isinstance(answer, dict) and "Error" in answer:
        assert answer["Error"] in nsm_client.ERROR_CODES
        assert answer["Error"] != "InternalError"
    if isinstance(answer, dict) and "Attestation" in answer:
        # every document the emulated NSM signs holds every AWS format rule and carries what was asked
        asked = cbor2.loads(request)["Attestation"]
        doc = parse_document(answer["Attestation"]["document"])
        for key in ("user_data", "nonce", "public_key"):
            assert getattr(doc, key) == asked.get(key), key


def test_socket_permissions(served: tuple[EmulatedNsm, Path]) -> None:
    _, path = served
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_server_close_ends_clients_and_frees_the_path(nsm: EmulatedNsm, tmp_path: Path) -> None:
    path = tmp_path / "nsm.sock"
    server = start_nsm_server(nsm, path)
    client = NsmClient(SocketTransport(path))
    assert client.describe_pcr(0).lock
    server.close()
    assert not path.exists()
    with pytest.raises(NsmTransportError):
        client.describe_pcr(0)
    client.close()
    with pytest.raises(NsmTransportError):
        NsmClient(SocketTransport(path))
    # a new server can take the same path
    again = start_nsm_server(nsm, path)
    try:
        with NsmClient(SocketTransport(path)) as fresh:
            assert fresh.describe_pcr(4).data.hex() == PCR4_VECTOR
    finally:
        again.close()


def test_long_socket_path(nsm: EmulatedNsm, tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = deep / "nsm.sock"
    assert len(str(path)) > 108
    server = start_nsm_server(nsm, path)
    try:
        with NsmClient(SocketTransport(path)) as client:
            assert len(client.get_random(16)) == 16
    finally:
        server.close()


def test_bad_setup_is_typed(pki: EmulatorPki, tmp_path: Path) -> None:
    from emulator.nsm import EmulatedNsmError

    with pytest.raises(EmulatedNsmError):
        EmulatedNsm(MODULE_ID, {0: b"short"}, False, "i-1", None, pki)
    with pytest.raises(EmulatedNsmError):
        EmulatedNsm(MODULE_ID, {40: bytes(48)}, False, "i-1", None, pki)
    nsm = EmulatedNsm(MODULE_ID, {}, False, "i-1", None, pki)
    with pytest.raises(EmulatedNsmError):
        start_nsm_server(nsm, tmp_path / "no-such-folder" / "nsm.sock")


def test_empty_public_key_is_refused(nsm: EmulatedNsm) -> None:
    """AWS allows public_key 1..1024 bytes; an empty one would make a document strict verifiers refuse."""
    answer = cbor2.loads(nsm.handle(cbor2.dumps({"Attestation": {"public_key": b"", "user_data": b"", "nonce": b""}})))
    assert answer == {"Error": "InvalidArgument"}
    ok = cbor2.loads(nsm.handle(cbor2.dumps({"Attestation": {"public_key": b"k", "user_data": b"", "nonce": b""}})))
    doc = parse_document(ok["Attestation"]["document"])
    assert (doc.public_key, doc.user_data, doc.nonce) == (b"k", b"", b"")
