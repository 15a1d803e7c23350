import pytest

from artifacts.errors import InputError
from edge_runtime.backends import BackendSettings
from edge_runtime.config import load_config

DESIGN_EXAMPLE = """
[registry]
url = "http://127.0.0.1:8700"
token_file = "/etc/shipyard/pull.token"
trusted_keys = ["/etc/shipyard/publisher.pub"]
poll_interval_s = 30

[[models]]
name = "product-embedder"
channel = "stable"

[cache]
dir = "/var/lib/shipyard/edge"
keep_versions = 2

[backends]
allow = []              # empty: every target the node can run
deny = []
prefer = []
require_gpu = false     # true: never fall back to CPU, stay not-ready instead
select = "first"        # or "measure": time the top CPU candidates on this node

[server]
host = "127.0.0.1"
port = 8080

[batching]
max_batch_size = 64
max_batch_tokens = 8192
max_wait_ms = 2
max_queued_tokens = 65536
latency_target_ms = 50

[result_cache]
max_bytes = 67108864
ttl_s = 600
"""


def test_design_example_loads(tmp_path):
    p = tmp_path / "edge.toml"
    p.write_text(DESIGN_EXAMPLE)
    cfg = load_config(p, environ={})
    assert cfg.models[0].name == "product-embedder" and cfg.batching.max_batch_tokens == 8192
    assert cfg.backends.policy().require_gpu is False
    assert str(cfg.cache_dir) == "/var/lib/shipyard/edge"
    assert cfg.backends.settings() == BackendSettings(threads=0, memory_pattern=False)


def test_environment_overrides(tmp_path):
    p = tmp_path / "edge.toml"
    p.write_text(DESIGN_EXAMPLE)
    cfg = load_config(
        p,
        environ={
            "SHIPYARD_EDGE_SERVER_PORT": "9001",
            "SHIPYARD_EDGE_BACKENDS_DENY": "openvino-int8,onnx-int8",
            "SHIPYARD_EDGE_BACKENDS_REQUIRE_GPU": "true",
            "SHIPYARD_EDGE_BACKENDS_MEMORY_PATTERN": "true",
            "SHIPYARD_EDGE_RESULT_CACHE_TTL_S": "5.5",
            "SHIPYARD_EDGE_REGISTRY_TOKEN": "12345",
            "SHIPYARD_EDGE_MODELS": "a:canary,b",
        },
    )
    assert cfg.server.port == 9001 and cfg.backends.deny == ["openvino-int8", "onnx-int8"]
    assert cfg.backends.require_gpu is True and cfg.result_cache.ttl_s == 5.5
    assert cfg.backends.settings().memory_pattern is True
    assert cfg.token() == "12345"  # a numeric-looking token stays a string (the schema says so)
    assert [(m.name, m.channel) for m in cfg.models] == [("a", "canary"), ("b", "stable")]
    cfg = load_config(
        None, environ={"SHIPYARD_EDGE_MODELS": "x", "SHIPYARD_EDGE_CACHE_DIR": str(tmp_path)}
    )
    assert cfg.models[0].name == "x"


@pytest.mark.parametrize(
    ("text", "env", "match"),
    [
        ("[server]\nport = 'x'", {"SHIPYARD_EDGE_MODELS": "m"}, "invalid edge config"),
        ("[[models]]\nname = 'Bad Name'", {}, "invalid model name"),
        ("", {}, "no \\[\\[models\\]\\]"),
        ("not = [toml", {}, "not valid TOML"),
        ("[nonsense]\nx=1", {"SHIPYARD_EDGE_MODELS": "m"}, "invalid edge config"),
        ("", {"SHIPYARD_EDGE_MODELS": "m", "SHIPYARD_EDGE_WHAT": "1"}, "unknown setting"),
        ("[[models]]\nname='a'\n[[models]]\nname='a'", {}, "listed twice"),
        ("[[models]]\nname='a'\n[[indexes]]\nname='c'\nmodel='b'", {}, "not in \\[\\[models"),
        ("[[models]]\nname='a'\n[[indexes]]\nname='a'\nmodel='a'", {}, "listed twice"),
        ("[[models]]\nname='a'\n[[indexes]]\nname='c/../x'\nmodel='a'", {}, "index name"),
        ("[[models]]\nname='a'\n[[indexes]]\nname='c'\nmodel='a'\nhold_swap_s=-1", {}, "hold"),
        ("[[models]]\nname='a'\n[[indexes]]\nname='c'\nmodel='a'\nhold_swap_s=nan", {}, "finite"),
        ("[[models]]\nname='a'\n[[indexes]]\nname='c'\nmodel='a'\nhold_swap_s=inf", {}, "finite"),
        ("", {"SHIPYARD_EDGE_MODELS": "a", "SHIPYARD_EDGE_INDEXES": "c"}, "NAME@MODEL"),
        ("[batching]\nmax_padding = 1.0", {"SHIPYARD_EDGE_MODELS": "m"}, "max_padding"),
        ("[batching]\nmax_padding = -0.1", {"SHIPYARD_EDGE_MODELS": "m"}, "max_padding"),
        ("[batching]\nmax_padding = nan", {"SHIPYARD_EDGE_MODELS": "m"}, "max_padding"),
        ("[server]\nmax_body_bytes = 0", {"SHIPYARD_EDGE_MODELS": "m"}, "max_body_bytes"),
        ("[batching]\ninline_max_tokens = -1", {"SHIPYARD_EDGE_MODELS": "m"}, "inline_max"),
        ("[batching]\ninline_max_tokens = 4096", {"SHIPYARD_EDGE_MODELS": "m"}, "inline_max"),
        ("[batching]\nrelease_after_idle_ms = nan", {"SHIPYARD_EDGE_MODELS": "m"}, "release_af"),
        ("[batching]\nrelease_after_idle_ms = -1", {"SHIPYARD_EDGE_MODELS": "m"}, "release_af"),
        ("[server]\nread_timeout_s = -1", {"SHIPYARD_EDGE_MODELS": "m"}, "read_timeout_s"),
        ("[server]\nread_timeout_s = nan", {"SHIPYARD_EDGE_MODELS": "m"}, "read_timeout_s"),
    ],
)
def test_bad_config(tmp_path, text, env, match):
    p = tmp_path / "edge.toml"
    p.write_text(text)
    with pytest.raises(InputError, match=match):
        load_config(p, environ=env)


def test_indexes_from_toml_and_environment(tmp_path):
    p = tmp_path / "edge.toml"
    p.write_text(
        DESIGN_EXAMPLE
        + '\n[[indexes]]\nname = "product-catalog"\nmodel = "product-embedder"\nhold_swap_s = 30\n'
    )
    cfg = load_config(p, environ={})
    ix = cfg.indexes[0]
    assert (ix.name, ix.model, ix.channel, ix.hold_swap_s) == (
        "product-catalog",
        "product-embedder",
        "stable",
        30,
    )
    cfg = load_config(
        None,
        environ={
            "SHIPYARD_EDGE_MODELS": "emb",
            "SHIPYARD_EDGE_INDEXES": "cat@emb:canary,cat2@emb",
            "SHIPYARD_EDGE_CACHE_DIR": str(tmp_path),
        },
    )
    assert [(i.name, i.model, i.channel) for i in cfg.indexes] == [
        ("cat", "emb", "canary"),
        ("cat2", "emb", "stable"),
    ]


def test_missing_token_file(tmp_path):
    cfg = load_config(
        None,
        environ={
            "SHIPYARD_EDGE_MODELS": "m",
            "SHIPYARD_EDGE_REGISTRY_TOKEN_FILE": str(tmp_path / "nope"),
        },
    )
    with pytest.raises(InputError, match="token_file"):
        cfg.token()


def test_embed_worker_section_is_checked(tmp_path):
    base = '[registry]\nurl = "http://c"\ntrusted_keys = ["k.pub"]\n'
    f = tmp_path / "edge.toml"
    f.write_text(base + '[embed_worker]\nenabled = true\ncatalogs = ["shop"]\n')
    cfg = load_config(f, environ={})  # a dedicated worker serves no model
    assert cfg.embed_worker.catalogs == ["shop"] and not cfg.models
    for bad, match in (
        ("catalogs = []", "catalogs is empty"),
        ('catalogs = ["../x"]', "catalog name"),
        ('catalogs = ["shop"]\nmax_attempts = 0', "max_attempts"),
    ):
        f.write_text(base + f"[embed_worker]\nenabled = true\n{bad}\n")
        with pytest.raises(InputError, match=match):
            load_config(f, environ={})
