"""Fleet heartbeats against a real central (SQLite and PostgreSQL): a node belongs to the token
that first reported it, one token reports a bounded number of nodes, reports are bounded."""

from __future__ import annotations

import time

import httpx
import msgspec
import pytest

from artifacts.client import RegistryClient
from artifacts.errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    Overloaded,
    ShipyardError,
)
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
    """node -> (its first model's reason, the reporting token's name as admins see it)."""
    return {
        n.node: (n.report.models[0].reason if n.report.models else "", n.reporter.partition(" ")[2])
        for n in admin.fleet()
    }


def token_id(admin: RegistryClient, name: str) -> int:
    return next(t.id for t in admin.tokens() if t.name == name)


def test_another_token_cannot_overwrite_a_nodes_report(fleet_central, admin):
    eu, attacker = client(fleet_central, "edge-eu"), client(fleet_central, "leaked")
    eu.heartbeat_node(report("eu-1", "honest"))
    with pytest.raises(ForbiddenError, match="reported with another token"):
        attacker.heartbeat_node(report("eu-1", "forged"))
    for lookalike in ("EU-1", "eu_1", "EU_1", "eu-\u212a".replace("\u212a", "1")):
        with pytest.raises(ForbiddenError):  # one canonical name: the same node
            attacker.heartbeat_node(report(lookalike, "forged"))
    with pytest.raises(Exception, match="ASCII only"):
        attacker.heartbeat_node(report("eu-\u212a", "a Kelvin sign"))
    assert reasons(admin) == {"eu-1": ("honest", "edge-eu")}
    eu.heartbeat_node(report("EU_1", "still honest"))  # the owner, in any spelling
    assert reasons(admin) == {"eu-1": ("still honest", "edge-eu")}
    assert [n.report.node for n in admin.fleet()] == ["eu-1"]  # stored in the canonical form
    admin.heartbeat_node(report("eu-1", "by an admin"))  # allowed, and takes nothing over
    attacker.heartbeat_node(report("eu-2", "its own"))  # a new name is its own
    assert reasons(admin) == {
        "eu-1": ("by an admin", "edge-eu"),
        "eu-2": ("its own", "leaked"),
    }
    # a pull client sees the nodes it reports (not the fleet's hardware map), not its token
    assert [(n.node, n.reporter) for n in eu.fleet()] == [("eu-1", "")]
    assert [n.node for n in attacker.fleet()] == ["eu-2"]


def test_a_node_changes_hands_only_by_an_admins_handover(fleet_central, admin):
    """Revoking or expiring the owner frees nothing (whoever polled fastest would take the
    node): an admin hands the nodes over, or forgets one."""
    old, new = client(fleet_central, "edge-old"), client(fleet_central, "edge-new")
    old.heartbeat_node(report("n1", "old"))
    old.heartbeat_node(report("n2", "old"))
    admin.revoke_token(token_id(admin, "edge-old"))
    with pytest.raises(ForbiddenError):
        new.heartbeat_node(report("n1", "new"))
    brief = client(fleet_central, "brief", expires_in_s=1)
    brief.heartbeat_node(report("n3", "brief"))
    time.sleep(1.5)
    with pytest.raises(ForbiddenError):
        new.heartbeat_node(report("n3", "after expiry"))

    old_id, new_id = token_id(admin, "edge-old"), token_id(admin, "edge-new")
    with pytest.raises(ConflictError, match="revoked or expired"):
        admin.fleet_handover(new_id, old_id)  # never to a dead token
    assert admin.fleet_handover(old_id, new_id, ["N1"]) == ["n1"]
    new.heartbeat_node(report("n1", "new"))
    with pytest.raises(ForbiddenError):
        new.heartbeat_node(report("n2", "new"))
    assert admin.fleet_handover(old_id, new_id) == ["n2"]
    new.heartbeat_node(report("n2", "new"))
    assert reasons(admin) == {
        "n1": ("new", "edge-new"),
        "n2": ("new", "edge-new"),
        "n3": ("brief", "brief"),
    }
    assert any(e.action == "fleet.handover" for e in admin.audit(50))
    with pytest.raises(ForbiddenError):
        new.fleet_handover(new_id, old_id)  # an admin's call


def test_a_node_no_token_owns_is_taken_by_its_next_reporter(fleet_central, admin):
    """Nodes reported only by an admin (or stored before owners existed) are free."""
    admin.heartbeat_node(report("free", "admin"))
    assert reasons(admin) == {"free": ("admin", "")}
    t = client(fleet_central, "edge")
    t.heartbeat_node(report("free", "claimed"))
    assert reasons(admin) == {"free": ("claimed", "edge")}


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
        for _ in range(50):  # a 429 (PostgreSQL: another heartbeat holds the lock) is retried
            try:
                c.heartbeat_node(report(node))
                return "ok"
            except Overloaded:
                time.sleep(0.05)
            except ShipyardError as exc:
                return type(exc).__name__
        return "Busy"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(lambda i: send(t, f"r{i}"), range(12)))
    assert outcomes.count("ok") == 3
    assert outcomes.count("ConflictError") + outcomes.count("Busy") == 9
    assert len(admin.fleet()) == 3

    racers = [client(fleet_central, f"racer-{i}") for i in range(6)]
    with ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(lambda c: send(c, "contested"), racers))
    # one owner; the rest refused (403) or, on PostgreSQL, told to retry (429) instead of
    # queueing for a database connection behind the first
    assert outcomes.count("ok") == 1
    assert outcomes.count("ForbiddenError") + outcomes.count("Busy") == 5
    owner = next(n.reporter for n in admin.fleet() if n.node == "contested").partition(" ")[2]
    assert owner == f"racer-{outcomes.index('ok')}"


def test_a_busy_node_lock_answers_429_with_retry_after(fleet_central, database_url):
    """PostgreSQL: while another transaction holds a node's lock, its heartbeat is told when
    to come back (``Retry-After``), and the client raises ``Overloaded`` carrying that wait."""
    if database_url is None:
        pytest.skip("SQLite serializes heartbeats behind its single writer: no 429 to test")
    import asyncio
    import zlib

    import asyncpg

    from central.db import _int4
    from central.fleet.service import NAME_LOCKS

    with RegistryClient(fleet_central.url, fleet_central.admin_token) as a:
        token = a.create_token("edge", ["pull"])
    t = RegistryClient(fleet_central.url, token)
    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")

    async def hold_lock_and_heartbeat() -> tuple[httpx.Response, Overloaded]:
        conn = await asyncpg.connect(dsn)
        try:
            async with conn.transaction():
                await conn.execute(
                    "SELECT pg_advisory_xact_lock($1, $2)",
                    _int4(NAME_LOCKS),
                    _int4(zlib.crc32(b"busy-node")),
                )
                raw = await asyncio.to_thread(
                    httpx.post,
                    f"{fleet_central.url}/v1/fleet/heartbeat",
                    content=msgspec.json.encode(report("busy-node")),
                    headers={
                        "Authorization": f"Bearer {token}",
                        "Content-Type": "application/json",
                    },
                )
                with pytest.raises(Overloaded) as refused:
                    await asyncio.to_thread(t.heartbeat_node, report("busy-node"))
                return raw, refused.value
        finally:
            await conn.close()

    raw, refused = asyncio.run(hold_lock_and_heartbeat())
    assert raw.status_code == 429
    assert raw.headers["Retry-After"] == "1"
    assert raw.headers["Content-Type"] == "application/problem+json"
    assert refused.status == 429 and refused.retry_after_s == 1.0
    with RegistryClient(fleet_central.url, fleet_central.admin_token) as a:
        assert [n.node for n in a.fleet()] == []  # nothing was stored while refused
    t.heartbeat_node(report("busy-node"))  # the lock is free again: accepted
    with RegistryClient(fleet_central.url, fleet_central.admin_token) as a:
        assert [n.node for n in a.fleet()] == ["busy-node"]


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
    with pytest.raises(Exception, match="limit is 65536"):
        t.heartbeat_node(report("n1", reason="r" * 1000, models=200))
    assert admin.fleet() == []
    assert len(msgspec.json.encode(report("n1", reason="r" * 50, models=200))) < 65536
    t.heartbeat_node(report("n1", reason="r" * 50, models=200))
    assert [n.node for n in admin.fleet()] == ["n1"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_stored_report_past_todays_limits_is_skipped_not_a_500(fleet_central, admin):
    """Rows written before the limits (a 75-character name SQLite kept) leave the view up."""
    import sqlite3

    t = client(fleet_central, "edge")
    t.heartbeat_node(report("ok-1"))
    bad = msgspec.json.encode(report("ok-1")).replace(b'"ok-1"', b'"' + b"x" * 75 + b'"')
    with sqlite3.connect(fleet_central.cfg.sqlite_path) as db:
        db.execute(
            "INSERT INTO nodes (name, report, last_seen) VALUES (?, ?, '2026-12-01 00:00:00')",
            ("x" * 75, bad),
        )
    assert [n.node for n in admin.fleet()] == ["ok-1"]
    with sqlite3.connect(fleet_central.cfg.sqlite_path) as db:  # an old spelling, kept as sent
        db.execute(
            "INSERT INTO nodes (name, report, last_seen) VALUES (?, ?, '2026-12-01 00:00:00')",
            ("OK_1", msgspec.json.encode(report("OK_1"))),
        )
    assert [n.node for n in admin.fleet()] == ["OK_1", "ok-1"]
    admin.delete_node("OK_1")  # the stored spelling first: the live canonical row stays
    assert [n.node for n in admin.fleet()] == ["ok-1"]
    admin.delete_node("OK_1")  # then the canonical one
    assert admin.fleet() == []


def test_the_fleet_view_comes_in_pages_by_name(fleet_central, admin):
    """``limit`` nodes per page after ``after``; ``X-Fleet-Next`` names where the next page
    starts, absent on the last; the client follows the pages; limits outside 1-256 and a
    cursor that is no name (a NUL byte: PostgreSQL text cannot hold one) are 400."""
    names = [f"node-{i:02d}" for i in range(7)]
    for name in reversed(names):
        admin.heartbeat_node(report(name))
    auth = {"Authorization": f"Bearer {fleet_central.admin_token}"}
    url = f"{fleet_central.url}/v1/fleet"
    seen, params, pages = [], {"limit": 3}, 0
    while True:
        r = httpx.get(url, params=params, headers=auth)
        assert r.status_code == 200
        page = [n["node"] for n in r.json()]
        assert len(page) <= 3
        seen += page
        pages += 1
        if "X-Fleet-Next" not in r.headers:
            break
        assert r.headers["X-Fleet-Next"] == page[-1]
        params = {"limit": 3, "after": r.headers["X-Fleet-Next"]}
    assert seen == names and pages == 3
    assert [n.node for n in admin.fleet(page_size=2)] == names
    assert [n.node for n in admin.fleet(page_size=2, max_nodes=5)] == names[:5]
    assert "X-Fleet-Next" not in httpx.get(url, params={"limit": 7}, headers=auth).headers
    r = httpx.get(url, headers=auth)  # a client that does not page: the first 256
    assert len(r.json()) == 7 and "X-Fleet-Next" not in r.headers
    bad_params = ({"limit": 0}, {"limit": 257}, {"limit": "x"}, {"after": "n" * 256})
    for bad in (*bad_params, {"after": "a\x00b"}, {"after": "a\nb"}):
        assert httpx.get(url, params=bad, headers=auth).status_code == 400, bad


def test_an_admin_assigns_nodes_before_they_report(fleet_central, admin):
    """Without ``from_token`` a handover assigns named nodes no token holds: new names get a
    row with an empty report, unowned ones an owner; a leaked token cannot claim them first.
    All or nothing: a name another token holds is a 409 and nothing changes."""
    edge, leaked = client(fleet_central, "edge"), client(fleet_central, "leaked")
    edge_id, leaked_id = token_id(admin, "edge"), token_id(admin, "leaked")
    admin.heartbeat_node(report("spare", "admin"))  # unowned
    assert admin.fleet_handover(None, edge_id, ["EDGE_2", "edge-1", "spare", "edge-1"]) == [
        "edge-1",
        "edge-2",
        "spare",
    ]
    before = {n.node: n for n in admin.fleet()}
    assert before["edge-1"].report == NodeReport(node="edge-1")
    assert before["edge-1"].reporter == f"#{edge_id} edge"
    with pytest.raises(ForbiddenError, match="reported with another token"):
        leaked.heartbeat_node(report("edge-1", "forged"))
    with pytest.raises(ForbiddenError):
        leaked.heartbeat_node(report("spare", "forged"))
    edge.heartbeat_node(report("edge-1", "honest"))
    assert reasons(admin)["edge-1"] == ("honest", "edge")

    leaked.heartbeat_node(report("theirs", "x"))
    with pytest.raises(ConflictError, match="theirs"):
        admin.fleet_handover(None, edge_id, ["new-one", "theirs"])
    assert "new-one" not in {n.node for n in admin.fleet()}  # all or nothing
    assert admin.fleet_handover(None, edge_id, ["edge-2"]) == ["edge-2"]  # already its own
    with pytest.raises(ConflictError, match="revoked or expired"):
        admin.fleet_handover(None, 999_999, ["x"])
    with pytest.raises(ShipyardError) as bad:
        admin.fleet_handover(None, edge_id, [])
    assert bad.value.status in (400, 422)
    with pytest.raises(ShipyardError) as many:
        admin.fleet_handover(None, edge_id, [f"n{i}" for i in range(257)])
    assert many.value.status == 400
    with pytest.raises(ForbiddenError):
        edge.fleet_handover(None, edge_id, ["mine"])  # an admin's call
    with pytest.raises(ShipyardError) as empty:  # [] is no filter: never "all of them"
        admin.fleet_handover(leaked_id, edge_id, [])
    assert empty.value.status == 400
    assert {n.node for n in leaked.fleet()} == {"theirs"}
    assert admin.fleet_handover(leaked_id, edge_id, ["theirs"]) == ["theirs"]
    assigned = [e for e in admin.audit(50) if e.action == "fleet.assign"]
    assert assigned[-1].subject == f"#{edge_id}"
    assert assigned[-1].detail.startswith("3 node(s): edge-1, edge-2, spare")


def test_with_assigned_claims_a_pull_token_reports_only_the_nodes_given_to_it(
    tmp_path, database_url, publisher_keys
):
    """``central serve --fleet-claims assigned``: no first-report claims, not even of a node
    only an admin reported; the refusal says how to assign; admins still report freely."""
    server = CentralServer(
        tmp_path / "central",
        database_url,
        trusted=[publisher_keys[1]],
        local_workers=0,
        fleet_claims="assigned",
    ).start()
    try:
        with RegistryClient(server.url, server.admin_token) as a:
            edge = client(server, "edge")
            edge_id = token_id(a, "edge")
            with pytest.raises(ForbiddenError, match=f"fleet-handover --to {edge_id} edge-1"):
                edge.heartbeat_node(report("edge-1"))
            a.heartbeat_node(report("free", "admin"))
            with pytest.raises(ForbiddenError, match="not assigned"):
                edge.heartbeat_node(report("free", "claim"))
            assert [n.node for n in a.fleet()] == ["free"]
            a.fleet_handover(None, edge_id, ["edge-1", "free"])
            edge.heartbeat_node(report("edge-1", "ok"))
            edge.heartbeat_node(report("free", "ok"))
            assert reasons(a) == {"edge-1": ("ok", "edge"), "free": ("ok", "edge")}
            other = client(server, "other")
            with pytest.raises(ForbiddenError) as held:  # held by another token: the same
                other.heartbeat_node(report("edge-1"))  # answer as a name nobody holds
            with pytest.raises(ForbiddenError) as absent:
                other.heartbeat_node(report("nowhere"))
            assert str(held.value).replace("edge-1", "X") == str(absent.value).replace(
                "nowhere", "X"
            )
            a.delete_node("free")  # forgotten: its old token cannot bring it back
            with pytest.raises(ForbiddenError, match="not assigned"):
                edge.heartbeat_node(report("free", "again"))
            assert sorted(n.node for n in a.fleet()) == ["edge-1"]
    finally:
        server.stop()


def test_fleet_claims_must_be_known():
    from central.fleet.service import FleetService

    with pytest.raises(ValueError, match="fleet claims"):
        FleetService(None, claims="anyone")  # type: ignore[arg-type]
