"""The edge's TUF client wrapper (``edge_runtime.channel_metadata``) against a real TUF repository
(central's) served by a real HTTP server on loopback, with the faults an attacker or a broken
network can produce: every failure is one of the node's own errors with the reason, never a
crash or a silently accepted pointer."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from artifacts.errors import InvalidNameError, RegistryError, RegistryUnavailableError
from central.tuf.repository import ChannelPointer, TufRepository
from edge_runtime.channel_metadata import (
    MAX_POINTER_BYTES,
    ChannelMetadata,
    MetadataRefused,
    Pointer,
    StaleMetadata,
    _parse,
)

DIGEST = "sha256:" + "a" * 64


class Server:
    """Serves ``/v1/tuf/...`` from a TufRepository; ``override[path]`` replaces one answer with
    ``(status, body, headers)``; ``delay_s`` stalls every answer; request headers are recorded."""

    def __init__(self, repo: TufRepository) -> None:
        self.repo = repo
        self.override: dict[str, tuple[int, bytes, dict[str, str]]] = {}
        self.seen: list[tuple[str, dict[str, str]]] = []
        self.delay_s = 0.0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                time.sleep(server.delay_s)
                status, body, headers = server.answer(self.path)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def answer(self, path: str) -> tuple[int, bytes, dict[str, str]]:
        if path in self.override:
            return self.override[path]
        rel = path.removeprefix("/v1/tuf/")
        if rel.startswith("targets/"):
            file = self.repo.targets_dir / rel.removeprefix("targets/")
        else:
            file = self.repo.metadata_dir / rel
        if not file.is_file():
            return 404, b"not found", {}
        return 200, file.read_bytes(), {"Content-Type": "application/json"}

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def publish(
    repo: TufRepository,
    version: int,
    *,
    model: str = "m",
    channel: str = "stable",
    bundles: dict[str, str] | None = None,
    halted: bool = False,
) -> None:
    repo._publish(ChannelPointer(model, channel, version, bundles or {"onnx-int8": DIGEST}, halted))


@pytest.fixture
def repo(tmp_path) -> TufRepository:
    r = TufRepository(tmp_path / "tuf", offline_keys=tmp_path / "offline")
    r.init()
    publish(r, 3)
    return r


@pytest.fixture
def server(repo) -> Iterator[Server]:
    s = Server(repo)
    yield s
    s.close()


@pytest.fixture
def root_file(repo, tmp_path) -> Path:
    path = tmp_path / "root.json"
    path.write_bytes(repo.root_json())
    return path


def client(server: Server, root_file: Path, tmp_path: Path, **kw) -> ChannelMetadata:
    return ChannelMetadata(server.url, kw.pop("token", "tok"), root_file, tmp_path / "node", **kw)


# ---- what a good registry gives ------------------------------------------------------------


def test_pointer_is_the_signed_channel_pointer(server, root_file, tmp_path):
    p = client(server, root_file, tmp_path).pointer("m", "stable")
    assert p == Pointer("m", "stable", 3, {"onnx-int8": DIGEST}, False)


def test_halted_channel_is_reported(repo, server, root_file, tmp_path):
    publish(repo, 4, halted=True)
    assert client(server, root_file, tmp_path).pointer("m", "stable").halted is True


def test_requests_carry_the_token_and_refuse_encodings(server, root_file, tmp_path):
    client(server, root_file, tmp_path, token="pull-token").pointer("m", "stable")
    paths = [p for p, _ in server.seen]
    assert "/v1/tuf/timestamp.json" in paths and "/v1/tuf/targets/m/stable.json" in paths
    for _, headers in server.seen:
        assert headers["authorization"] == "Bearer pull-token"
        assert headers["accept-encoding"] == "identity"


def test_no_token_sends_no_authorization(server, root_file, tmp_path):
    client(server, root_file, tmp_path, token=None).pointer("m", "stable")
    assert server.seen and all("authorization" not in h for _, h in server.seen)


def test_trailing_slash_in_the_url_is_harmless(server, root_file, tmp_path):
    md = ChannelMetadata(server.url + "/", None, root_file, tmp_path / "n")
    assert md.bases == [server.url + "/v1/tuf/"]
    assert md.pointer("m", "stable").version == 3


def test_defaults_and_nested_cache_dir(server, root_file, tmp_path):
    md = ChannelMetadata(server.url, None, root_file, tmp_path / "a" / "b")
    assert md.timeout_s == 30.0
    assert (tmp_path / "a" / "b" / "metadata").is_dir()


def test_a_new_version_is_seen_on_the_next_call(repo, server, root_file, tmp_path):
    md = client(server, root_file, tmp_path)
    assert md.pointer("m", "stable").version == 3
    publish(repo, 5, bundles={"onnx-fp32": DIGEST, "onnx-int8": "sha256:" + "b" * 64})
    p = md.pointer("m", "stable")
    assert p.version == 5 and p.bundles == {"onnx-fp32": DIGEST, "onnx-int8": "sha256:" + "b" * 64}


def test_trusted_root_is_kept_after_the_first_update(server, root_file, tmp_path):
    md = client(server, root_file, tmp_path)
    md.pointer("m", "stable")
    assert (tmp_path / "node" / "metadata" / "root.json").is_file()
    root_file.write_text("not a root any more")  # the bootstrap file is read only once
    assert md.pointer("m", "stable").version == 3


def test_key_rotation_arrives_through_root(repo, server, root_file, tmp_path):
    md = client(server, root_file, tmp_path)
    md.pointer("m", "stable")
    repo.rotate("timestamp")
    publish(repo, 6)
    assert md.pointer("m", "stable").version == 6


# ---- what a hostile or broken registry gives ------------------------------------------------


def test_unknown_channel_is_refused(server, root_file, tmp_path):
    with pytest.raises(MetadataRefused, match="lists no channel m:canary"):
        client(server, root_file, tmp_path).pointer("m", "canary")


@pytest.mark.parametrize(
    ("model", "channel"), [("../etc", "stable"), ("m", "a/b"), ("M", "stable")]
)
def test_path_tricks_in_names_are_refused_before_any_request(
    server, root_file, tmp_path, model, channel
):
    with pytest.raises(InvalidNameError, match="name"):
        client(server, root_file, tmp_path).pointer(model, channel)
    assert server.seen == []


def test_root_of_another_registry_is_refused(server, tmp_path):
    other = TufRepository(tmp_path / "other", offline_keys=tmp_path / "other-offline")
    other.init()
    foreign = tmp_path / "foreign-root.json"
    foreign.write_bytes(other.root_json())
    with pytest.raises(MetadataRefused, match="TUF metadata was refused"):
        client(server, foreign, tmp_path).pointer("m", "stable")


def test_tampered_pointer_is_refused(repo, server, root_file, tmp_path):
    real = (repo.targets_dir / "m" / "stable.json").read_bytes()
    forged = real.replace(b'"version": 3', b'"version": 9')
    assert len(forged) == len(real)
    server.override["/v1/tuf/targets/m/stable.json"] = (200, forged, {})
    with pytest.raises(MetadataRefused, match="LengthOrHashMismatchError"):
        client(server, root_file, tmp_path).pointer("m", "stable")


def test_forged_timestamp_signature_is_refused(repo, server, root_file, tmp_path):
    doc = json.loads((repo.metadata_dir / "timestamp.json").read_bytes())
    doc["signed"]["version"] += 1
    server.override["/v1/tuf/timestamp.json"] = (200, json.dumps(doc).encode(), {})
    with pytest.raises(MetadataRefused, match="UnsignedMetadataError"):
        client(server, root_file, tmp_path).pointer("m", "stable")


def test_rollback_to_older_metadata_is_refused(repo, server, root_file, tmp_path):
    old_ts = (repo.metadata_dir / "timestamp.json").read_bytes()
    md = client(server, root_file, tmp_path)
    publish(repo, 4)
    assert md.pointer("m", "stable").version == 4
    server.override["/v1/tuf/timestamp.json"] = (200, old_ts, {})
    with pytest.raises(MetadataRefused, match="BadVersionNumberError"):
        md.pointer("m", "stable")


def test_expired_timestamp_is_stale_not_refused(tmp_path):
    repo = TufRepository(tmp_path / "tuf", offline_keys=tmp_path / "off", timestamp_expiry_s=-60)
    repo.init()
    publish(repo, 1)
    root = tmp_path / "root.json"
    root.write_bytes(repo.root_json())
    s = Server(repo)
    try:
        with pytest.raises(StaleMetadata, match="^stale-metadata: ") as err:
            ChannelMetadata(s.url, None, root, tmp_path / "n").pointer("m", "stable")
        assert isinstance(err.value, RegistryError)
    finally:
        s.close()


@pytest.mark.parametrize("status", [500, 503, 401])
def test_http_errors_are_unavailability(server, root_file, tmp_path, status):
    server.override["/v1/tuf/timestamp.json"] = (status, b"oops", {})
    with pytest.raises(
        RegistryUnavailableError, match=f"TUF metadata unreachable: .*HTTP {status}"
    ):
        client(server, root_file, tmp_path).pointer("m", "stable")


def test_encoded_answer_is_refused(repo, server, root_file, tmp_path):
    body = (repo.metadata_dir / "timestamp.json").read_bytes()
    server.override["/v1/tuf/timestamp.json"] = (200, body, {"Content-Encoding": "gzip"})
    with pytest.raises(RegistryUnavailableError, match="gzip-encoded answer refused"):
        client(server, root_file, tmp_path).pointer("m", "stable")


def test_identity_encoding_header_is_accepted(repo, server, root_file, tmp_path):
    body = (repo.metadata_dir / "timestamp.json").read_bytes()
    server.override["/v1/tuf/timestamp.json"] = (200, body, {"Content-Encoding": "Identity"})
    assert client(server, root_file, tmp_path).pointer("m", "stable").version == 3


def test_registry_down_is_unavailability(server, root_file, tmp_path):
    url = server.url
    server.close()
    with pytest.raises(RegistryUnavailableError, match="TUF metadata unreachable: .*ConnectError"):
        ChannelMetadata(url, None, root_file, tmp_path / "n").pointer("m", "stable")


def test_slow_registry_times_out(server, root_file, tmp_path):
    server.delay_s = 1.5
    started = time.monotonic()
    with pytest.raises(RegistryUnavailableError, match="Timeout"):
        client(server, root_file, tmp_path, timeout_s=0.3).pointer("m", "stable")
    assert time.monotonic() - started < 1.4


def test_endless_answer_is_cut_at_the_length_limit(server, root_file, tmp_path):
    server.override["/v1/tuf/timestamp.json"] = (200, b"{" * (4 << 20), {})
    with pytest.raises(RegistryUnavailableError, match="TUF metadata unreachable"):
        client(server, root_file, tmp_path).pointer("m", "stable")


def _pointer_of_length(repo: TufRepository, length: int) -> None:
    base = len(ChannelPointer("m", "stable", 7, {"t": ""}).to_bytes())
    publish(repo, 7, bundles={"t": "x" * (length - base)})
    assert (repo.targets_dir / "m" / "stable.json").stat().st_size == length


def test_pointer_at_the_size_limit_is_accepted(repo, server, root_file, tmp_path):
    assert MAX_POINTER_BYTES == 64 * 1024
    _pointer_of_length(repo, MAX_POINTER_BYTES)
    assert client(server, root_file, tmp_path).pointer("m", "stable").version == 7


def test_oversized_pointer_is_refused_before_download(repo, server, root_file, tmp_path):
    _pointer_of_length(repo, MAX_POINTER_BYTES + 1)
    with pytest.raises(MetadataRefused, match=f"is {MAX_POINTER_BYTES + 1} bytes"):
        client(server, root_file, tmp_path).pointer("m", "stable")
    assert "/v1/tuf/targets/m/stable.json" not in [p for p, _ in server.seen]


def test_no_download_leftovers(server, root_file, tmp_path):
    client(server, root_file, tmp_path).pointer("m", "stable")
    assert sorted(p.name for p in (tmp_path / "node").iterdir()) == ["metadata"]


# ---- the pointer document itself -----------------------------------------------------------


def _doc(**kw) -> bytes:
    doc = {"model": "m", "channel": "stable", "version": 2, "bundles": {"t": DIGEST}} | kw
    return json.dumps({k: v for k, v in doc.items() if v is not ...}).encode()


def test_parse_reads_every_field():
    assert _parse(_doc(version="4", halted=1, bundles={"t": 5}), "m", "stable") == Pointer(
        "m", "stable", 4, {"t": "5"}, True
    )
    assert _parse(_doc(), "m", "stable").halted is False


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[]",
        _doc(model=...),
        _doc(channel=...),
        _doc(version=...),
        _doc(bundles=...),
        _doc(version="four"),
        _doc(version=None),
        _doc(bundles=["t"]),
    ],
)
def test_malformed_pointer_is_refused(data):
    with pytest.raises(MetadataRefused, match="the channel pointer for m:stable is malformed"):
        _parse(data, "m", "stable")


@pytest.mark.parametrize(("model", "channel"), [("other", "stable"), ("m", "canary")])
def test_pointer_naming_another_channel_is_refused(model, channel):
    with pytest.raises(MetadataRefused, match=f"names {model}:{channel}"):
        _parse(_doc(model=model, channel=channel), "m", "stable")


def test_errors_are_registry_errors():
    assert issubclass(StaleMetadata, RegistryError) and issubclass(MetadataRefused, RegistryError)


def test_empty_content_encoding_header_is_identity(repo, server, root_file, tmp_path):
    body = (repo.metadata_dir / "timestamp.json").read_bytes()
    server.override["/v1/tuf/timestamp.json"] = (200, body, {"Content-Encoding": ""})
    assert client(server, root_file, tmp_path).pointer("m", "stable").version == 3


def test_base_url_keeps_its_path():
    assert ChannelMetadata("http://h/reg/X", None, Path("r"), Path("/tmp")).bases == [
        "http://h/reg/X/v1/tuf/"
    ]


def test_a_dead_replica_is_skipped_for_the_next(server, root_file, tmp_path):
    """Several central URLs: the first refuses connections, the second serves verified
    metadata (the same checks apply whichever replica answers)."""
    from artifacts.cli.procs import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    md = ChannelMetadata(f"{dead},{server.url}", None, root_file, tmp_path / "n", timeout_s=5)
    assert md.pointer("m", "stable").version == 3


def test_a_restarted_node_reopens_its_cache_dir(server, root_file, tmp_path):
    client(server, root_file, tmp_path).pointer("m", "stable")
    again = client(server, root_file, tmp_path)  # same directory, created before
    assert again.pointer("m", "stable").version == 3


@pytest.mark.parametrize(
    ("model", "channel", "what"), [("M!", "stable", "model name"), ("m", "a b", "channel name")]
)
def test_bad_names_say_which_name(server, root_file, tmp_path, model, channel, what):
    with pytest.raises(InvalidNameError, match=what):
        client(server, root_file, tmp_path).pointer(model, channel)


def test_downloads_stay_inside_the_node_dir(server, root_file, tmp_path, monkeypatch):
    import tempfile

    made: list[str] = []
    real = tempfile.TemporaryDirectory

    def spy(*args, **kw):
        d = real(*args, **kw)
        made.append(d.name)
        return d

    monkeypatch.setattr(tempfile, "TemporaryDirectory", spy)
    assert client(server, root_file, tmp_path).pointer("m", "stable").version == 3
    assert made and all(Path(d).parent == tmp_path / "node" for d in made)
