"""The `artifact` registry verbs as a user runs them, against a live central on loopback."""

import json
import os
import subprocess
import sys

import msgspec
import pytest

from artifacts.bundle import read_manifest
from tests.factories import cpu_node


@pytest.fixture
def cli(tmp_path, central):
    env = {
        "SHIPYARD_CONFIG_DIR": str(tmp_path / "cfg"),
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        **{k: v for k, v in os.environ.items() if k == "PYTHONPATH"},
    }

    def run(*args, ok=True, stdin=None):
        r = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from artifacts.cli import main; sys.exit(main())",
                *args,
            ],
            capture_output=True,
            text=True,
            env=env,
            input=stdin,
        )
        if ok:
            assert r.returncode == 0, (args, r.stdout, r.stderr)
        return r

    return run


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_full_cli_cycle(cli, central, tiny_builds, publisher_keys, tmp_path):
    out, _ = tiny_builds["embedding"]
    priv, pub = publisher_keys
    r = cli("push", str(out), "--model", "tiny-embedding", "--key", str(priv), ok=False)
    assert r.returncode == 1 and "login" in r.stderr
    r = cli("login", central.url, "--token", central.admin_token, ok=False)
    assert r.returncode == 2  # a token on the command line: refused (usage error)
    r = cli("login", central.url, ok=False)
    assert r.returncode == 1 and "--token-stdin" in r.stderr
    cli("login", central.url, "--token-stdin", stdin=central.admin_token + "\n")
    assert oct((tmp_path / "cfg" / "cli.json").stat().st_mode & 0o777) == "0o600"

    r = cli("push", str(out), "--model", "tiny-embedding", ok=False)
    assert r.returncode == 1 and "--key" in r.stderr
    r = cli("push", str(out), "--model", "wrong-name", "--key", str(priv), ok=False)
    assert "not 'wrong-name'" in r.stderr
    pushed = json.loads(
        cli("push", str(out), "--model", "tiny-embedding", "--key", str(priv), "--json").stdout
    )
    assert pushed["version"] == 1
    assert sorted(b["target"] for b in pushed["bundles"]) == [
        "onnx-fp32",
        "onnx-int8",
        "openvino-int8",
    ]
    assert all(b["created"] for b in pushed["bundles"])
    again = json.loads(
        cli("push", str(out), "--model", "tiny-embedding", "--key", str(priv), "--json").stdout
    )
    assert again["version"] == 2

    table = cli("ls").stdout
    assert "tiny-embedding" in table
    assert "all passed" in cli("ls", "tiny-embedding").stdout
    shown = cli("show", "tiny-embedding", "1").stdout
    assert "onnx-int8" in shown and "passed" in shown

    cli("promote", "tiny-embedding", "1", "--channel", "stable")
    cli("promote", "tiny-embedding", "2", "--channel", "stable")
    hist = json.loads(cli("history", "tiny-embedding", "--channel", "stable", "--json").stdout)
    assert [e["version"] for e in hist["history"]] == [1, 2]
    rolled = json.loads(cli("rollback", "tiny-embedding", "--channel", "stable", "--json").stdout)
    assert rolled["version"] == 1

    caps = tmp_path / "caps.json"
    caps.write_bytes(msgspec.json.encode(cpu_node(vnni=False)))
    res = json.loads(
        cli(
            "resolve",
            "tiny-embedding",
            "--channel",
            "stable",
            "--capabilities",
            str(caps),
            "--json",
        ).stdout
    )
    # built on a host with VNNI: an 8-bit bundle that a node without it cannot run; built
    # without (reduce-range, 7-bit weights): a bundle that runs there too
    int8 = read_manifest(tiny_builds["embedding"][0] / "onnx-int8")
    if "avx2" in int8.target.requires.cpu_isa_any:
        assert [e["target"] for e in res["eligible"]] == ["onnx-int8", "openvino-int8", "onnx-fp32"]
        assert "-w7" in int8.quality.config
    else:
        assert [e["target"] for e in res["eligible"]] == ["openvino-int8", "onnx-fp32"]
        assert (
            res["excluded"][0]["target"] == "onnx-int8"
            and "avx512_vnni" in res["excluded"][0]["reason"]
        )
    here = cli("resolve", "tiny-embedding", "--channel", "stable", "--this-node").stdout
    assert "eligible" in here
    r = cli("resolve", "tiny-embedding", "--channel", "stable", ok=False)
    assert "exactly one of" in r.stderr

    r = cli("pull", "tiny-embedding:stable", "--out", str(tmp_path / "pulled"), ok=False)
    assert "--trusted-key" in r.stderr
    pulled = json.loads(
        cli(
            "pull",
            "tiny-embedding:stable",
            "--out",
            str(tmp_path / "pulled"),
            "--trusted-key",
            str(pub),
            "--json",
        ).stdout
    )
    assert pulled["version"] == 1 and len(pulled["bundles"]) == 3
    assert all(b["signed_by"] for b in pulled["bundles"])
    cli("verify", str(tmp_path / "pulled" / "onnx-int8"), "--trusted-key", str(pub))
    assert not (tmp_path / "pulled" / ".downloads").exists()
    r = cli(
        "pull",
        "tiny-embedding@1",
        "--target",
        "tensorrt-fp16",
        "--out",
        str(tmp_path / "x"),
        "--integrity-only",
        ok=False,
    )
    assert "no bundle for tensorrt-fp16" in r.stderr
    r = cli("pull", "Bad Ref", "--out", str(tmp_path / "x"), "--integrity-only", ok=False)
    assert "bad reference" in r.stderr
    audit = json.loads(cli("audit", "--json").stdout)
    assert any(e["action"] == "channel.rollback" for e in audit)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_fleet_table_names_each_nodes_token_and_an_admin_forgets_a_node(cli, central):
    from artifacts.client import RegistryClient
    from artifacts.wire import NodeModel, NodeReport

    token = central.token("pull", name="edge-eu")
    with RegistryClient(central.url, token) as edge:
        edge.heartbeat_node(
            NodeReport(
                node="eu-1",
                capabilities=cpu_node(),
                models=[NodeModel(model="m", channel="stable", state="ready")],
            )
        )
    cli("login", central.url, "--token-stdin", stdin=central.admin_token + "\n")
    table = cli("fleet").stdout
    assert "eu-1" in table and "edge-eu" in table
    assert json.loads(cli("fleet", "--json").stdout)[0]["reporter"].endswith(" edge-eu")
    with RegistryClient(central.url, central.admin_token) as a:
        ids = {t.name: t.id for t in a.tokens()}
        a.create_token("edge-new", ["pull"])
        new_id = next(t.id for t in a.tokens() if t.name == "edge-new")
    out = cli("fleet-handover", "--from", str(ids["edge-eu"]), "--to", str(new_id)).stdout
    assert "1 node(s) now reported by token" in out and "eu-1" in out
    assert json.loads(cli("fleet", "--json").stdout)[0]["reporter"].endswith(" edge-new")
    assert "removed" in cli("forget-node", "eu-1").stdout
    assert json.loads(cli("fleet", "--json").stdout) == []
    r = cli("forget-node", "eu-1", ok=False)
    assert r.returncode == 1 and "no node 'eu-1'" in r.stderr
    out = cli("fleet-handover", "--to", str(new_id), "eu-2").stdout  # assigned before it reports
    assert "1 node(s) now reported by token" in out and "eu-2" in out
    table = cli("fleet").stdout
    assert "eu-2" in table and "assigned, not reported yet" in table and "edge-new" in table
    r = cli("fleet-handover", "--to", str(new_id), ok=False)  # nothing named, no --from
    assert r.returncode == 2 and "name the nodes to assign" in r.stderr
