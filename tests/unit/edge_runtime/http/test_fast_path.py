"""The embeddings fast path's body reading and decoding (its answers against the framework's
route are compared end to end in tests/integration/edge_runtime/test_serving.py)."""

from __future__ import annotations

import asyncio

import pytest

from artifacts.errors import PayloadTooLarge
from edge_runtime.http.fast_path import (
    ClientException,
    ValidationException,
    _Disconnected,
    decode_request,
    read_body,
)


def receiver(*messages: dict):
    it = iter(messages)
    seen: list[dict] = []

    async def receive() -> dict:
        message = next(it)
        seen.append(message)
        return message

    receive.seen = seen  # type: ignore[attr-defined]
    return receive


def chunk(body: bytes, more: bool = True) -> dict:
    return {"type": "http.request", "body": body, "more_body": more}


def test_the_body_is_joined_from_its_chunks():
    receive = receiver(chunk(b'{"in'), chunk(b'put": "x"}', more=False))
    assert asyncio.run(read_body(receive, 100, None)) == b'{"input": "x"}'


def test_a_declared_length_over_the_limit_is_refused_before_reading():
    receive = receiver(chunk(b"x" * 10, more=False))
    with pytest.raises(PayloadTooLarge, match="limit is 5"):
        asyncio.run(read_body(receive, 5, 10))
    assert receive.seen == []  # type: ignore[attr-defined]


def test_a_body_that_grows_past_the_limit_stops_being_read():
    receive = receiver(chunk(b"x" * 4), chunk(b"x" * 4), chunk(b"x" * 4, more=False))
    with pytest.raises(PayloadTooLarge):
        asyncio.run(read_body(receive, 6, None))  # no Content-Length: chunked
    assert len(receive.seen) == 2  # type: ignore[attr-defined]


def test_a_client_that_leaves_mid_body_is_noticed():
    receive = receiver(chunk(b"x"), {"type": "http.disconnect"})
    with pytest.raises(_Disconnected):
        asyncio.run(read_body(receive, 100, None))


@pytest.mark.parametrize(
    ("raw", "error", "detail"),
    [
        (b"{x", ClientException, "JSON is malformed"),
        (b"[1]", ValidationException, "'key': 'data'"),
        (b'{"input": [1]}', ValidationException, "'key': 'input[0]'"),
        (b'{"input": "x", "encoding_format": "hex"}', ValidationException, "encoding_format"),
    ],
)
def test_bad_bodies_are_refused_with_the_framework_s_wording(raw, error, detail):
    with pytest.raises(error) as info:
        decode_request(raw)
    assert info.value.status == 400 and detail in str(info.value)


def test_a_good_body_decodes():
    data = decode_request(b'{"input": ["a", "b"], "encoding_format": "base64"}')
    assert data.input == ["a", "b"] and data.encoding_format == "base64" and data.model is None
