"""API keys of the edge: the file format, token buckets, reload that never loses the keys in
force, and key creation (the pure parts; the HTTP path is in the integration tests)."""

from __future__ import annotations

import stat

import pytest

from artifacts.errors import InputError
from edge_runtime.http.api_keys import KeyRing, add_key, hash_key, parse_keys, route_path, scope_of


def test_paths_map_to_scopes_and_probes_stay_open():
    assert scope_of("/healthz") is None and scope_of("/readyz") is None
    assert scope_of("/v2/health/ready") is None
    assert scope_of("/metrics") == "metrics"
    assert scope_of("/v1/status") == "status" and scope_of("/schema/openapi.json") == "status"
    assert scope_of("/v1/embeddings") == "infer" and scope_of("/v2/models/m/infer") == "infer"


@pytest.mark.parametrize(
    "line",
    [
        "a sha256:" + "0" * 64 + " 10",  # no scopes
        "a sha256:" + "0" * 63 + " 10 infer",  # short digest
        "A sha256:" + "0" * 64 + " 10 infer",  # bad name
        "a sha256:" + "0" * 64 + " nan infer",
        "a sha256:" + "0" * 64 + " -1 infer",
        "a sha256:" + "0" * 64 + " 1 admin",  # unknown scope
    ],
)
def test_malformed_lines_refuse_the_whole_file(line):
    with pytest.raises(InputError):
        parse_keys(f"ok {hash_key('k')} 0 infer\n{line}\n", "keys")


def test_token_bucket_limits_the_rate_and_refills():
    (key,) = parse_keys(f"fe {hash_key('k')} 2 infer  # two per second\n", "keys").values()
    t = 100.0
    key.refilled = t
    assert key.take(t) is None and key.take(t) is None  # a burst of one second's worth
    wait = key.take(t)
    assert wait is not None and 0 < wait <= 0.5
    assert key.take(t + 0.5) is None  # refilled


def test_reload_keeps_the_keys_in_force_when_the_file_is_broken(tmp_path):
    path = tmp_path / "keys"
    first = add_key(path, "search-fe", 5, ["infer"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    ring = KeyRing(path)
    assert ring.lookup(first).name == "search-fe" and ring.lookup("nope") is None
    path.write_text(path.read_text() + "garbage\n")
    assert not ring.reload() and "expected" in ring.error
    assert ring.lookup(first) is not None  # still in force
    second = add_key(tmp_path / "k2", "ops", 0, ["metrics", "status"])
    path.write_text((tmp_path / "k2").read_text())
    assert ring.reload() and ring.error == ""
    assert ring.lookup(first) is None and ring.lookup(second).scopes == {"metrics", "status"}


def test_add_key_refuses_what_it_could_not_parse(tmp_path):
    with pytest.raises(InputError):
        add_key(tmp_path / "keys", "Bad Name", 1, ["infer"])
    assert not (tmp_path / "keys").exists()


@pytest.mark.parametrize(
    ("path", "scope"),
    [
        ("/v1/status", "status"),
        ("/v1/status/", "status"),
        ("//v1/status", "status"),
        ("/v1//status//", "status"),
        ("/metrics/", "metrics"),
        ("//metrics", "metrics"),
        ("/schema/openapi.json", "status"),
        ("//schema", "status"),
        ("/healthz/", None),
        ("/readyz", None),
        ("/v1/embeddings", "infer"),
        ("/v2/models/m/infer", "infer"),
        ("/anything/else", "infer"),
    ],
)
def test_a_path_spelling_cannot_change_its_scope(path, scope):
    assert scope_of(path) == scope


@pytest.mark.parametrize(
    "path",
    ["", "/", "//", "/v1/embeddings", "/v1/embeddings/", "//v1//embeddings//", "/v1/x///", "v1"],
)
def test_route_path_fast_case_agrees_with_the_full_rewrite(path):
    import re

    assert route_path(path) == (re.sub(r"/{2,}", "/", path).rstrip("/") or "/")
