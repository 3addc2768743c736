"""core.channel.protocol: framing, versioning, concurrency and the one-bad-connection rule, over real sockets."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Mapping
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.channel.protocol import (
    BAD_FRAME,
    BAD_VERSION,
    MAX_FRAME,
    TOO_LARGE,
    TRUNCATED,
    UNKNOWN_METHOD,
    BlockingClient,
    ConnectionClosed,
    ProtocolClient,
    ProtocolError,
    ProtocolTimeout,
    RemoteError,
    Request,
    Response,
    decode_body,
    encode_frame,
    serve_connection,
)

# --- decoder properties ---------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=2048))
def test_decoder_never_crashes_on_bytes(body: bytes) -> None:
    try:
        message = decode_body(body)
    except ProtocolError as exc:
        assert exc.wire_code
        return
    assert isinstance(message, Request | Response)


cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from(["v", "id", "method", "params", "result", "error", "x"]), cbor_values))
def test_decoder_never_crashes_on_cbor_maps(obj: dict[str, Any]) -> None:
    try:
        message = decode_body(cbor2.dumps(obj))
    except ProtocolError as exc:
        assert exc.wire_code
        return
    # a message the decoder accepts survives its own encoding unchanged
    assert decode_body(cbor2.dumps(message.to_wire())) == message


@settings(max_examples=50, deadline=None)
@given(
    st.integers(min_value=0, max_value=2**63),
    st.text(min_size=1, max_size=64),
    st.dictionaries(st.text(max_size=8), cbor_values, max_size=5),
)
def test_request_round_trip(ident: int, method: str, params: dict[str, Any]) -> None:
    frame = encode_frame(Request(ident, method, params).to_wire())
    (length,) = struct.unpack(">I", frame[:4])
    assert length == len(frame) - 4
    decoded = decode_body(frame[4:])
    assert isinstance(decoded, Request)
    assert (decoded.id, decoded.method) == (ident, method)
    assert cbor2.dumps(dict(decoded.params)) == cbor2.dumps(params)


def test_decoder_rejects_trailing_bytes_tags_and_depth() -> None:
    good = cbor2.dumps({"v": 1, "id": 1, "method": "m", "params": {}})
    with pytest.raises(ProtocolError, match="trailing"):
        decode_body(good + b"\x00")
    tagged = cbor2.dumps({"v": 1, "id": 1, "method": "m", "params": {"t": cbor2.CBORTag(1, 0)}})
    with pytest.raises(ProtocolError, match="unsupported CBOR value"):
        decode_body(tagged)
    deep: Any = 1
    for _ in range(40):
        deep = [deep]
    with pytest.raises(ProtocolError, match="nests deeper"):
        decode_body(cbor2.dumps({"v": 1, "id": 1, "method": "m", "params": {"d": deep}}))
    with pytest.raises(ProtocolError) as info:
        decode_body(cbor2.dumps({"v": 2, "id": 1, "method": "m"}))
    assert info.value.wire_code == BAD_VERSION
    with pytest.raises(ProtocolError) as info:
        encode_frame({"v": 1, "id": 1, "result": b"x" * (MAX_FRAME + 1)})
    assert info.value.wire_code == TOO_LARGE


# --- a real server over TCP loopback ----------------------------------------------------------------


async def _dispatch(method: str, params: Mapping[str, Any]) -> Any:
    if method == "echo":
        return dict(params)
    if method == "sleep":
        await asyncio.sleep(float(params["s"]))
        return params["tag"]
    if method == "boom":
        raise RuntimeError("secret-ish detail that must not leak")
    raise ProtocolError(f"unknown method {method!r}", wire_code=UNKNOWN_METHOD)


@pytest.fixture
async def server() -> AsyncIterator[int]:
    srv = await asyncio.start_server(
        lambda r, w: serve_connection(r, w, _dispatch), "127.0.0.1", 0, limit=MAX_FRAME + 4
    )
    try:
        yield srv.sockets[0].getsockname()[1]
    finally:
        srv.close()


async def _raw(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def _read_error_then_eof(reader: asyncio.StreamReader) -> Mapping[str, Any]:
    (length,) = struct.unpack(">I", await asyncio.wait_for(reader.readexactly(4), 5))
    frame = cbor2.loads(await reader.readexactly(length))
    assert await asyncio.wait_for(reader.read(), 5) == b""  # then the server closes
    return frame


async def test_concurrent_calls_are_matched_by_id(server: int) -> None:
    client = await ProtocolClient.connect_tcp("127.0.0.1", server)
    async with client:
        # the slowest call is sent first, so answers arrive out of order
        calls = [client.call("sleep", {"s": 0.05 * (5 - i), "tag": i}) for i in range(6)]
        calls += [client.call("echo", {"n": i}) for i in range(50)]
        results = await asyncio.gather(*calls)
    assert results[:6] == list(range(6))
    assert results[6:] == [{"n": i} for i in range(50)]


async def test_remote_errors_are_typed_and_do_not_leak(server: int) -> None:
    async with await ProtocolClient.connect_tcp("127.0.0.1", server) as client:
        with pytest.raises(RemoteError) as info:
            await client.call("nope")
        assert info.value.remote_code == UNKNOWN_METHOD
        with pytest.raises(RemoteError) as info:
            await client.call("boom")
        assert info.value.remote_code == "internal"
        assert "secret" not in str(info.value)
        assert await client.call("echo", {"still": "alive"}) == {"still": "alive"}


async def test_client_timeout_then_the_connection_still_works(server: int) -> None:
    async with await ProtocolClient.connect_tcp("127.0.0.1", server) as client:
        with pytest.raises(ProtocolTimeout):
            await client.call("sleep", {"s": 2, "tag": "late"}, timeout=0.1)
        assert await client.call("echo", {"a": 1}) == {"a": 1}


@pytest.mark.parametrize(
    "bad, code",
    [
        (struct.pack(">I", 5) + b"\xff\xff\xff\xff\xff", BAD_FRAME),
        (struct.pack(">I", 3) + cbor2.dumps([1]), BAD_FRAME),
        (struct.pack(">I", MAX_FRAME + 1), TOO_LARGE),
        (struct.pack(">I", 100) + b"\xa1" * 10, TRUNCATED),
        (b"\x00\x00", TRUNCATED),
    ],
    ids=["garbage", "not-a-map", "oversized", "truncated-body", "truncated-header"],
)
async def test_a_bad_frame_closes_only_that_connection(server: int, bad: bytes, code: str) -> None:
    good = await ProtocolClient.connect_tcp("127.0.0.1", server)
    async with good:
        slow = asyncio.create_task(good.call("sleep", {"s": 0.3, "tag": "survived"}))
        reader, writer = await _raw(server)
        if bad[:4] == struct.pack(">I", 3):
            bad = struct.pack(">I", len(cbor2.dumps([1]))) + cbor2.dumps([1])
        writer.write(bad)
        await writer.drain()
        if code == TRUNCATED:
            writer.write_eof()  # the peer stops mid-frame
        frame = await _read_error_then_eof(reader)
        writer.close()
        assert frame["v"] == 1 and frame["error"]["code"] == code
        assert await slow == "survived"
        assert await good.call("echo", {"x": 1}) == {"x": 1}


async def test_a_stalled_frame_body_times_out_with_an_error_frame() -> None:
    """A peer that sends a header and then nothing gets `truncated` once the body timeout passes."""
    srv = await asyncio.start_server(
        lambda r, w: serve_connection(r, w, _dispatch, body_timeout=0.2), "127.0.0.1", 0
    )
    port = srv.sockets[0].getsockname()[1]
    try:
        reader, writer = await _raw(port)
        writer.write(struct.pack(">I", 100) + b"\xa1")  # the rest never comes, and no EOF either
        await writer.drain()
        frame = await _read_error_then_eof(reader)
        writer.close()
        assert frame["id"] is None and frame["error"]["code"] == TRUNCATED
        async with await ProtocolClient.connect_tcp("127.0.0.1", port) as client:
            assert await client.call("echo", {"after": 1}) == {"after": 1}
    finally:
        srv.close()


async def test_unknown_version_answers_and_keeps_the_connection(server: int) -> None:
    reader, writer = await _raw(server)
    body = cbor2.dumps({"v": 7, "id": 41, "method": "echo", "params": {}})
    writer.write(struct.pack(">I", len(body)) + body)
    body = cbor2.dumps({"v": 1, "id": 42, "method": "echo", "params": {"ok": True}})
    writer.write(struct.pack(">I", len(body)) + body)
    await writer.drain()
    answers = []
    for _ in range(2):
        (length,) = struct.unpack(">I", await asyncio.wait_for(reader.readexactly(4), 5))
        answers.append(cbor2.loads(await reader.readexactly(length)))
    writer.close()
    assert answers[0]["id"] == 41 and answers[0]["error"]["code"] == BAD_VERSION
    assert answers[1] == {"v": 1, "id": 42, "result": {"ok": True}}


async def test_pending_calls_fail_when_the_server_goes_away() -> None:
    started = asyncio.Event()

    async def hang(method: str, params: Mapping[str, Any]) -> Any:
        started.set()
        await asyncio.sleep(30)

    conns: list[asyncio.StreamWriter] = []

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        conns.append(w)
        await serve_connection(r, w, hang)

    srv = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    async with await ProtocolClient.connect_tcp("127.0.0.1", port) as client:
        call = asyncio.create_task(client.call("x", timeout=10))
        await asyncio.wait_for(started.wait(), 5)
        srv.close()
        for w in conns:
            w.transport.abort()
        with pytest.raises(ConnectionClosed):
            await call
        with pytest.raises(ConnectionClosed):
            await client.call("x")


async def test_blocking_client(server: int) -> None:
    def work() -> list[Any]:
        sock = socket.create_connection(("127.0.0.1", server), timeout=5)
        with BlockingClient(sock) as client:
            out = [client.call("echo", {"i": i}) for i in range(3)]
            with pytest.raises(RemoteError):
                client.call("nope")
            with pytest.raises(ProtocolTimeout):
                client.call("sleep", {"s": 1, "tag": "t"}, timeout=0.1)
            # the late answer to the timed-out call is skipped by id
            out.append(client.call("sleep", {"s": 0, "tag": "next"}, timeout=5))
            return out

    assert await asyncio.to_thread(work) == [{"i": 0}, {"i": 1}, {"i": 2}, "next"]
