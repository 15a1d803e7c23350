"""Fleet heartbeats from a real edge node, and halting a channel's rollout."""

import time

import pytest

from artifacts.client import RegistryClient
from artifacts.errors import ConflictError


def test_edge_heartbeats_show_in_the_fleet(tiny_published, make_edge, registry):
    edge = make_edge(poll_interval_s=0.2)
    edge.wait_ready()
    with RegistryClient(registry.url, registry.admin_token) as c:
        deadline = time.monotonic() + 30
        while True:  # the first heartbeat may still say "starting"; a ready one follows at once
            nodes = c.fleet()
            if nodes and nodes[0].report.models[0].state == "ready":
                break
            assert time.monotonic() < deadline, nodes
            time.sleep(0.2)
        node = nodes[0]
    assert node.node == edge.node.node and node.age_s < 30
    m = node.report.models[0]
    assert (m.model, m.state, m.target, m.version) == (
        "tiny-embedding",
        "ready",
        "onnx-int8",
        tiny_published["embedding"],
    )
    assert node.report.capabilities.arch == "x86_64"


def test_halt_freezes_promotions_until_resumed(
    tiny_published, admin_client, tiny_builds, key, tmp_path
):
    from tests.integration.edge_runtime.conftest import push_version

    out, _ = tiny_builds["embedding"]
    v2 = push_version(admin_client, "tiny-embedding", [out / "onnx-fp32"], key, tmp_path)
    halted = admin_client.halt("tiny-embedding", "stable", "bad canary metrics")
    assert halted.halted and halted.version == tiny_published["embedding"]
    with pytest.raises(ConflictError, match="halted"):
        admin_client.promote("tiny-embedding", "stable", v2)
    admin_client.resume("tiny-embedding", "stable")
    assert admin_client.promote("tiny-embedding", "stable", v2).version == v2
    assert {"channel.halt", "channel.resume"} <= {e.action for e in admin_client.audit(100)}
