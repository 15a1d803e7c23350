"""Fleet heartbeats against a real central (SQLite and PostgreSQL): a node belongs to the token
that first reported it, one token reports a bounded number of nodes, reports are bounded."""

from __future__ import annotations

import time

import httpx
import msgspec
import pytest

from artifacts.client import RegistryClient
from artifacts.errors import ConflictError, ForbiddenError, NotFoundError
from artifacts.wire import NodeModel, NodeReport
from bench.fixtures import cpu_node
from tests.servers import CentralServer


def report(node: str, reason: str = "", models: int = 1) -> NodeReport:
    return NodeReport(
        node=node,
        arch="x86_64",
        capabilities=cpu_node(),
        models=[
            NodeModel(model=f"m{i}", channel="stable", state="ready", reason=reason)
            for i in range(models)
        ],
    )


@pytest.fixture
def fleet_central(tmp_path, database_url, publisher_keys):
    server = CentralServer(
        tmp_path / "central",
        database_url,
        trusted=[publisher_keys[1]],
        local_workers=0,
        fleet_max_nodes_per_token=3,
    ).start()
    yield server
    server.stop()


@pytest.fixture
def admin(fleet_central):
    with RegistryClient(fleet_central.url, fleet_central.admin_token) as c:
        yield c


def client(central: CentralServer, name: str, **kw) -> RegistryClient:
    with RegistryClient(central.url, central.admin_token) as a:
        token = a.create_token(name, ["pull"], **kw)
    return RegistryClient(central.url, token)


def reasons(admin: RegistryClient) -> dict[str, tuple[str, str]]:
    return {n.node: (n.report.models[0].reason, n.reporter) for n in admin.fleet()}


def test_another_token_cannot_overwrite_a_nodes_report(fleet_central, admin):
    eu, attacker = client(fleet_central, "edge-eu"), client(fleet_central, "leaked")
    eu.heartbeat_node(report("eu-1", "honest"))
    with pytest.raises(ForbiddenError, match="another token, 'edge-eu'"):
        attacker.heartbeat_node(report("eu-1", "forged"))
    assert reasons(admin) == {"eu-1": ("honest", "edge-eu")}
    eu.heartbeat_node(report("eu-1", "still honest"))  # the owner goes on reporting
    assert reasons(admin) == {"eu-1": ("still honest", "edge-eu")}
    admin.heartbeat_node(report("eu-1", "by an admin"))  # allowed, and takes nothing over
    attacker.heartbeat_node(report("eu-2", "its own"))  # a new name is its own
    assert reasons(admin) == {
        "eu-1": ("by an admin", "edge-eu"),
        "eu-2": ("its own", "leaked"),
    }


def test_a_revoked_or_expired_owner_hands_the_node_to_the_next_token(fleet_central, admin):
    old, new = client(fleet_central, "edge-old"), client(fleet_central, "edge-new")
    old.heartbeat_node(report("n1", "old"))
    with pytest.raises(ForbiddenError):
        new.heartbeat_node(report("n1", "new"))
    old_id = next(t.id for t in admin.tokens() if t.name == "edge-old")
    admin.revoke_token(old_id)
    new.heartbeat_node(report("n1", "new"))  # a rotated credential takes the node over
    assert reasons(admin) == {"n1": ("new", "edge-new")}

    brief = client(fleet_central, "brief", expires_in_s=1)
    brief.heartbeat_node(report("n2", "brief"))
    time.sleep(1.5)
    new.heartbeat_node(report("n2", "after expiry"))
    assert reasons(admin)["n2"] == ("after expiry", "edge-new")


def test_one_token_reports_a_bounded_number_of_nodes_and_an_admin_deletes_stale_ones(
    fleet_central, admin
):
    t = client(fleet_central, "edge")
    for i in range(3):
        t.heartbeat_node(report(f"n{i}"))
    with pytest.raises(ConflictError, match="already reports 3 nodes"):
        t.heartbeat_node(report("n3"))
    assert sorted(n.node for n in admin.fleet()) == ["n0", "n1", "n2"]
    t.heartbeat_node(report("n1", "known names still report"))
    with pytest.raises(ForbiddenError):
        t.delete_node("n0")  # an admin's call
    admin.delete_node("n0")
    with pytest.raises(NotFoundError):
        admin.delete_node("n0")
    t.heartbeat_node(report("n3"))
    assert sorted(n.node for n in admin.fleet()) == ["n1", "n2", "n3"]
    assert any(e.action == "fleet.delete" and e.subject == "n0" for e in admin.audit(50))


def test_racing_heartbeats_keep_the_quota_and_one_owner(fleet_central, admin):
    """Concurrent first reports: one token's new names stop at its quota; two tokens racing
    for one name leave one owner and a clear refusal, never a 500."""
    from concurrent.futures import ThreadPoolExecutor

    t = client(fleet_central, "edge")

    def send(c: RegistryClient, node: str) -> str:
        try:
            c.heartbeat_node(report(node))
            return "ok"
        except (ConflictError, ForbiddenError) as exc:
            return type(exc).__name__

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(lambda i: send(t, f"r{i}"), range(12)))
    assert outcomes.count("ok") == 3 and outcomes.count("ConflictError") == 9
    assert len(admin.fleet()) == 3

    racers = [client(fleet_central, f"racer-{i}") for i in range(6)]
    with ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(lambda c: send(c, "contested"), racers))
    assert outcomes.count("ok") == 1 and outcomes.count("ForbiddenError") == 5
    owner = next(n.reporter for n in admin.fleet() if n.node == "contested")
    assert owner == f"racer-{outcomes.index('ok')}"


@pytest.mark.parametrize(
    "body",
    [
        {"node": "x" * 65},
        {"node": ""},
        {"node": "../etc"},
        {"node": "n", "models": "many"},
        {"node": "n", "models": [{"model": "m", "channel": "c", "state": "ready"}] * 257},
    ],
)
def test_a_bad_report_is_refused_and_stores_nothing(fleet_central, admin, body):
    token = admin.create_token("edge", ["pull"])
    r = httpx.post(
        f"{fleet_central.url}/v1/fleet/heartbeat",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code in (400, 422), r.text  # malformed / an unsafe name
    assert admin.fleet() == []


def test_an_oversized_report_is_refused(fleet_central, admin):
    t = client(fleet_central, "edge")
    with pytest.raises(Exception, match="limit is 131072"):
        t.heartbeat_node(report("n1", reason="r" * 1000, models=200))
    assert admin.fleet() == []
    assert msgspec.json.encode(report("n1", reason="r" * 100, models=200))  # within: accepted
    t.heartbeat_node(report("n1", reason="r" * 100, models=200))
    assert [n.node for n in admin.fleet()] == ["n1"]
