"""Several central URLs: which failures move a call to the next replica, and which must not
(a non-idempotent call that may have been applied is never repeated)."""

from __future__ import annotations

import datetime
import json

import httpx
import pytest

from artifacts.client import RegistryClient, central_urls, retry_after_s
from artifacts.digests import sha256_bytes
from artifacts.errors import InputError, NotFoundError, Overloaded, RegistryUnavailableError

A, B = "http://a.test:8700", "http://b.test:8700"


def answer(status: int, body=None) -> httpx.Response:
    """A streamed answer (the client reads answers as streams, as from a real server)."""
    data = b"" if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if body is not None else {}
    return httpx.Response(status, headers=headers, stream=httpx.ByteStream(data))


def client(handler) -> tuple[RegistryClient, list[str]]:
    seen: list[str] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.host}{request.url.path}")
        return handler(request)

    return RegistryClient(f"{A}, {B}/", "t", transport=httpx.MockTransport(record)), seen


def test_urls_are_split_trimmed_and_checked():
    assert central_urls(" http://a:1/ ,http://b:2") == ["http://a:1", "http://b:2"]
    assert central_urls(["http://a:1"]) == ["http://a:1"]
    with pytest.raises(InputError):
        central_urls(" , ")
    with pytest.raises(InputError):
        central_urls("http://a:1,ftp://b")


def test_an_unreachable_replica_is_skipped_and_the_answering_one_kept():
    def handler(request):
        if request.url.host == "a.test":
            raise httpx.ConnectError("refused", request=request)
        return answer(200, [])

    c, seen = client(handler)
    assert c.list_models() == []
    assert c.url == B
    c.list_models()  # the replica that answered is asked first from now on
    assert seen == ["GET a.test/v1/models", "GET b.test/v1/models", "GET b.test/v1/models"]


@pytest.mark.parametrize("status", [502, 503, 504])
def test_a_replica_that_cannot_serve_passes_the_call_on(status):
    def handler(request):
        if request.url.host == "a.test":
            return answer(status, {"title": "NotReady", "detail": "db down"})
        return answer(200, [])

    c, seen = client(handler)
    assert c.list_models() == []
    assert seen == ["GET a.test/v1/models", "GET b.test/v1/models"]


@pytest.mark.parametrize("status", [502, 503, 504])
def test_a_post_answered_unavailable_is_not_repeated(status):
    """A gateway's 502/504, or a 503 after the replica created the version, may follow an
    applied call: repeating it on another replica would create a second version."""

    def handler(request):
        if request.url.host == "a.test":
            return answer(status, {"title": "Unavailable", "detail": "x"})
        return answer(201, {"model": "m", "version": 7})

    c, seen = client(handler)
    with pytest.raises(RegistryUnavailableError):
        c.create_version("m")
    assert len(seen) == 1


def test_a_post_that_never_reached_a_replica_goes_to_the_next():
    def handler(request):
        if request.url.host == "a.test":
            raise httpx.ConnectError("refused", request=request)
        return answer(201, {"model": "m", "version": 7})

    c, seen = client(handler)
    assert c.create_version("m") == 7
    assert len(seen) == 2


def test_an_index_delta_is_never_repeated_though_it_is_a_put():
    """PUT /v1/indexes/{name}/items starts a build: not idempotent, whatever its method."""
    from artifacts.wire import IndexItems

    def handler(request):
        raise httpx.ReadTimeout("no answer in time", request=request)

    c, seen = client(handler)
    with pytest.raises(RegistryUnavailableError):
        c.change_index_items("catalog", IndexItems(items=[{"id": "1", "text": "shoe"}]))
    assert len(seen) == 1


def test_a_redirect_for_blob_bytes_is_followed_without_the_token(tmp_path):
    data = b"bytes on the OCI registry"
    digest = sha256_bytes(data)
    seen: dict[str, str | None] = {}

    def handler(request):
        seen[request.url.host] = request.headers.get("authorization")
        if request.url.host == "a.test":
            return httpx.Response(307, headers={"Location": f"http://oci.test/v2/r/blobs/{digest}"})
        return httpx.Response(200, stream=httpx.ByteStream(data))

    c = RegistryClient(A, "secret-token", transport=httpx.MockTransport(handler))
    assert c.download_blob(digest, tmp_path / "b").read_bytes() == data
    assert seen == {"a.test": "Bearer secret-token", "oci.test": None}


def test_a_post_that_may_have_been_applied_is_not_repeated():
    def handler(request):
        raise httpx.ReadError("connection reset mid-answer", request=request)

    c, seen = client(handler)
    with pytest.raises(RegistryUnavailableError):
        c.create_version("m")
    assert seen == ["POST a.test/v1/models/m/versions"]


def test_an_answer_is_final_whatever_it_says():
    c, seen = client(lambda r: answer(404, {"title": "NotFound", "detail": "no m"}))
    with pytest.raises(NotFoundError):
        c.list_versions("m")
    assert len(seen) == 1


def test_an_upload_cut_mid_body_is_sent_again_whole_to_the_next_replica():
    data = b"x" * (3 << 20)
    digest = sha256_bytes(data)
    bodies: dict[str, int] = {}

    def handler(request):
        if request.method == "HEAD":
            return answer(404)
        body = request.read()
        bodies[request.url.host] = len(body)
        if request.url.host == "a.test":
            raise httpx.WriteError("replica died mid-upload", request=request)
        return answer(201, {"digest": digest, "size": len(body), "created": True})

    c, _ = client(handler)
    assert c.upload_blob(digest, data) is True
    assert bodies["b.test"] == len(data)


def test_every_replica_down_says_so():
    def handler(request):
        raise httpx.ConnectError("refused", request=request)

    c, seen = client(handler)
    with pytest.raises(RegistryUnavailableError, match="b.test"):
        c.list_models()
    assert len(seen) == 2


@pytest.mark.parametrize(
    ("header", "wait"),
    [
        ("7", 7.0),
        (None, 1.0),  # no header: a second
        ("soon", 1.0),  # unreadable: a second
        ("999999999", 300.0),  # a server cannot park the client for days
        ("-5", 1.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # a date in the past: retry now
    ],
)
def test_429_raises_overloaded_with_the_servers_bounded_retry_after(header, wait):
    def handler(request):
        r = answer(429, {"title": "Overloaded", "status": 429, "detail": "busy"})
        if header is not None:
            r.headers["Retry-After"] = header
        return r

    c, seen = client(handler)
    with pytest.raises(Overloaded, match="busy") as refused:
        c.list_models()
    assert refused.value.status == 429
    assert refused.value.retry_after_s == wait
    assert seen == ["GET a.test/v1/models"]  # busy is not down: no failover


def test_retry_after_odd_digits_fall_back_or_cap():
    assert retry_after_s("\u00b2") == 1.0  # a digit to str.isdigit(), not to float()
    assert retry_after_s("12345678901234567890") == 300.0
    assert retry_after_s("1e9") == 1.0


def test_retry_after_as_a_future_http_date():
    from email.utils import format_datetime

    when = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=30)
    assert 25 <= retry_after_s(format_datetime(when, usegmt=True)) <= 30


def test_fleet_pages_are_followed_and_a_repeating_cursor_is_refused():
    from artifacts.errors import RegistryError

    def node(name):
        return {
            "node": name,
            "last_seen": "2026-12-03T00:00:00Z",
            "age_s": 1.0,
            "report": {"node": name, "arch": "x86_64", "capabilities": {}, "models": []},
        }

    pages = {None: (["a", "b"], "b"), "b": (["c"], None)}

    def handler(request):
        names, nxt = pages[request.url.params.get("after")]
        r = answer(200, [node(n) for n in names])
        if nxt is not None:
            r.headers["X-Fleet-Next"] = nxt
        return r

    c, seen = client(handler)
    assert [n.node for n in c.fleet(page_size=2)] == ["a", "b", "c"]
    assert len(seen) == 2

    def stuck(request):  # a hostile registry: empty pages, the same cursor forever
        r = answer(200, [])
        r.headers["X-Fleet-Next"] = "z"
        return r

    c, seen = client(stuck)
    with pytest.raises(RegistryError, match="do not advance"):
        c.fleet()
    assert len(seen) == 2

    def overfull(request):  # more nodes than asked for
        return answer(200, [node(f"n{i}") for i in range(3)])

    with pytest.raises(RegistryError, match="overflow"):
        client(overfull)[0].fleet(page_size=2)

    def repeats(request):  # the same node on every page, fresh cursors
        r = answer(200, [node("a")])
        r.headers["X-Fleet-Next"] = str(len(request.url.params.get("after", "")) + 1)
        return r

    with pytest.raises(RegistryError, match="repeat node 'a'"):
        client(repeats)[0].fleet(page_size=2)
