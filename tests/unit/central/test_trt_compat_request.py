"""``trt_compat`` in a build request: validated like every other field, part of the build cache
key and of the provenance only when asked (earlier builds keep their keys), and refused with a
clear message by the CLI."""

import pytest

from artifacts.errors import Unprocessable
from artifacts.provenance import BuildParameters
from artifacts.targets import parse_trt_compat
from artifacts.wire import BuildRequest
from central.builds.cache import cache_prefix
from central.builds.service import check_options
from tests.unit.artifacts.test_cli_local import artifact

SOURCE = "sha256:" + "a" * 64


def req(**kw) -> BuildRequest:
    return BuildRequest(model="m", task="embedding", source_blob=SOURCE, **kw)


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("none", []),
        ("", []),
        ("version", ["version"]),
        ("hardware, version", ["hardware", "version"]),
        ("version,same-cc,version", ["same-cc", "version"]),
        (["version", "none"], ["version"]),
    ],
)
def test_parse(value, parsed):
    assert parse_trt_compat(value) == parsed


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("fast", "unknown --trt-compat fast; choose from none, version, hardware, same-cc"),
        ("hardware,same-cc", "two hardware levels: pick one"),
    ],
)
def test_parse_refusals(value, message):
    with pytest.raises(ValueError, match=message):
        parse_trt_compat(value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["version", "hardware"], "must list each of version, hardware, same-cc once, sorted"),
        (["version", "version"], "once, sorted"),
        (["lean"], "unknown --trt-compat lean"),
        (["hardware", "same-cc"], "pick one"),
    ],
)
def test_the_service_refuses_bad_values(value, message):
    with pytest.raises(Unprocessable, match=message):
        check_options(req(trt_compat=value))


def test_the_service_accepts_canonical_values():
    for value in ([], ["version"], ["hardware", "version"], ["same-cc", "version"]):
        check_options(req(trt_compat=value))


def test_cache_key_changes_only_when_compat_is_asked():
    plain = cache_prefix(req(), "tensorrt-fp16")
    assert cache_prefix(req(trt_compat=[]), "tensorrt-fp16") == plain
    assert cache_prefix(req(trt_compat=["version"]), "tensorrt-fp16") != plain
    assert cache_prefix(req(trt_compat=["version"]), "tensorrt-fp16") != cache_prefix(
        req(trt_compat=["hardware", "version"]), "tensorrt-fp16"
    )


def test_provenance_records_compat_only_when_asked():
    assert "trt_compat" not in BuildParameters.for_job(req(), "tensorrt-fp16", 3).as_dict()
    params = BuildParameters.for_job(req(trt_compat=["version"]), "tensorrt-fp16", 3).as_dict()
    assert params["trt_compat"] == ["version"]


def test_cli_refuses_an_unknown_compat_before_building(tmp_path):
    r = artifact(
        "build",
        str(tmp_path),
        "--task",
        "embedding",
        "--model",
        "m",
        "--out",
        str(tmp_path / "o"),
        "--trt-compat",
        "fast",
    )
    assert r.returncode == 1
    assert "unknown --trt-compat fast" in r.stderr
    assert not (tmp_path / "o").exists()
