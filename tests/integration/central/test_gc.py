"""Retention and garbage collection against a real central (SQLite and PostgreSQL), its real
blob store and real pushes: what is pinned survives with its reason, what nothing needs goes
with its unique blobs, a dry run changes nothing, the audit log is exported before it is
trimmed, and a collection racing concurrent pushes never leaves a registered bundle without
its bytes."""

from __future__ import annotations

import asyncio
import json
import os
import threading

import pytest

from artifacts.client import RegistryClient
from artifacts.digests import sha256_bytes
from artifacts.errors import NotFoundError, ShipyardError
from artifacts.signing import load_signing_key
from artifacts.states import ServeState
from artifacts.wire import NodeModel, NodeReport
from central.gc.policy import RetentionPolicy
from central.gc.service import Collector
from tests.integration.edge_runtime.conftest import push_version

M = "tiny-embedding"  # the bundles' own model name


def collect(central, policy: RetentionPolicy, *, dry_run: bool = False, **kw):
    async def run():
        collector = Collector.for_config(central.cfg, policy)
        try:
            plan = await collector.plan()
            return plan, (None if dry_run else await collector.apply(plan, **kw))
        finally:
            await collector.close()

    return asyncio.run(run())


def files_of(c: RegistryClient, model: str, version: int) -> set[str]:
    return {f["sha256"] for b in c.get_version(model, version).bundles for f in b.manifest["files"]}


def test_pinned_versions_survive_and_unneeded_ones_go(
    central, tiny_builds, publisher_keys, tmp_path
):
    out, _ = tiny_builds["embedding"]
    key = load_signing_key(publisher_keys[0])
    with RegistryClient(central.url, central.admin_token) as c:
        fp32, int8 = out / "onnx-fp32", out / "onnx-int8"
        for target in (fp32, fp32, fp32, int8, fp32):  # v4 alone holds the int8 files
            push_version(c, M, [target], key)
        c.promote(M, "stable", 2)
        c.promote(M, "stable", 3)
        c.rollback(M, "stable")  # stable -> v2; v3 is its rollback history
        c.heartbeat_node(
            NodeReport(
                node="edge-eu-1",
                models=[NodeModel(model=M, channel="canary", state=ServeState.READY, version=1)],
            )
        )
        stray = os.urandom(512)
        c.upload_blob(sha256_bytes(stray), stray)
        int8_only = files_of(c, M, 4) - files_of(c, M, 5)
        assert int8_only

        policy = RetentionPolicy(keep=1, history=2, grace_s=0.0)
        plan, _ = collect(central, policy, dry_run=True)
        why = {d.version: (d.keep, d.why) for d in plan.versions}
        assert why == {
            5: (True, "among the newest 1"),
            4: (False, "nothing needs it"),
            3: (True, "in channel stable's recent history"),
            2: (True, "channel stable points at it; in channel stable's recent history"),
            1: (True, "edge edge-eu-1 ran it recently"),
        }
        doomed = {d for d, _ in plan.blobs}
        assert int8_only <= doomed and sha256_bytes(stray) in doomed
        assert files_of(c, M, 4)  # a dry run changes nothing
        assert central.cfg.blobs_path.joinpath("sha256").exists()

        _, result = collect(central, policy)
        assert result.versions == [f"{M} v4"] and result.skipped == []
        with pytest.raises(NotFoundError):
            c.get_version(M, 4)
        for v in (1, 2, 3, 5):
            for d in files_of(c, M, v):
                assert c.blob_exists(d), (v, d)
        for d in int8_only | {sha256_bytes(stray)}:
            assert not c.blob_exists(d)
        actions = {e.action for e in c.audit()}
        assert {"version.delete", "blob.delete"} <= actions


def test_audit_rows_are_exported_before_they_go(central, tmp_path):
    with RegistryClient(central.url, central.admin_token) as c:
        c.create_token("t", ["pull"])
        before = len(c.audit())
    export = tmp_path / "audit.jsonl"
    policy = RetentionPolicy(audit_days=-1.0)  # everything is past retention
    with pytest.raises(ValueError, match="only after export"):
        collect(central, policy)
    _, result = collect(central, policy, audit_export=export)
    lines = [json.loads(x) for x in export.read_text().splitlines()]
    assert result.audit == len(lines) >= before and oct(export.stat().st_mode)[-3:] == "600"
    assert any(x["action"] == "token.create" for x in lines)
    with RegistryClient(central.url, central.admin_token) as c:
        left = c.audit()
    assert [e.action for e in left] == ["audit.export"]


def test_collection_racing_pushes_loses_nothing(central, tiny_builds, publisher_keys):
    """Pushes of new versions (their blobs mostly present already, unreferenced once retention
    dropped the older versions) while collections run back to back: every bundle still
    registered has every file; a push the sweep raced is refused with a clear error and
    succeeds on retry."""
    out, _ = tiny_builds["embedding"]
    key = load_signing_key(publisher_keys[0])
    # a short grace: an upload in flight (uploaded, not yet registered) is what grace protects
    policy = RetentionPolicy(keep=1, history=0, edge_window_s=0, grace_s=2.0)
    stop = threading.Event()
    errors: list[Exception] = []

    def sweeper() -> None:
        while not stop.is_set():
            try:
                collect(central, policy)
            except Exception as exc:  # recorded: the test fails on any
                errors.append(exc)
                return

    refusals: list[str] = []
    t = threading.Thread(target=sweeper)
    t.start()
    try:
        with RegistryClient(central.url, central.admin_token) as c:
            for i in range(8):
                target = out / ("onnx-int8" if i % 2 else "onnx-fp32")
                for _attempt in range(3):
                    try:
                        push_version(c, M, [target], key)
                        break
                    except ShipyardError as exc:
                        refusals.append(str(exc))
                else:
                    raise AssertionError(f"a push kept being refused: {refusals[-3:]}")
    finally:
        stop.set()
        t.join()
    assert not errors, errors
    clear = ("upload it again", "has not been uploaded")
    assert all(any(c in r for c in clear) for r in refusals), refusals
    collect(central, policy)
    with RegistryClient(central.url, central.admin_token) as c:
        versions = [v.version for v in c.list_versions(M)]
        assert versions and c.get_version(M, max(versions)).bundles
        for v in versions:
            for d in files_of(c, M, v):
                assert c.blob_exists(d), (v, d)


def test_cli_dry_run_and_refusals(tmp_path, publisher_keys):
    import subprocess
    import sys

    from tests.servers import CentralServer

    server = CentralServer(
        tmp_path / "central", None, trusted=[publisher_keys[1]], local_workers=0
    ).start()
    try:

        def gc(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run(
                [
                    sys.executable,
                    "-c",
                    "import sys; from central.cli import main; sys.exit(main())",
                    "gc",
                    "--home",
                    str(server.cfg.home_path),
                    *args,
                ],
                capture_output=True,
                text=True,
                timeout=120,
            )

        r = gc("--dry-run", "--json")
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        assert doc["dry_run"] and doc["result"] is None and doc["versions"] == []
        r = gc("--audit-days", "30")
        assert r.returncode == 2 and "--audit-export" in r.stderr
        r = gc("--keep", "0")
        assert r.returncode == 2
    finally:
        server.stop()


def test_a_version_promoted_after_the_plan_keeps_itself_and_its_blobs(
    central, tiny_builds, publisher_keys, tmp_path
):
    out, _ = tiny_builds["embedding"]
    key = load_signing_key(publisher_keys[0])
    policy = RetentionPolicy(keep=1, history=0, edge_window_s=0, grace_s=0.0)
    with RegistryClient(central.url, central.admin_token) as c:
        push_version(c, M, [out / "onnx-int8"], key)
        push_version(c, M, [out / "onnx-fp32"], key)
        int8_only = files_of(c, M, 1) - files_of(c, M, 2)

        async def race():
            collector = Collector.for_config(central.cfg, policy)
            try:
                plan = await collector.plan()
                assert [d.version for d in plan.deleted_versions] == [1]
                assert int8_only <= {d for d, _ in plan.blobs}
                c.promote(M, "canary", 1)  # between the mark and the sweep
                return await collector.apply(plan)
            finally:
                await collector.close()

        result = asyncio.run(race())
        assert result.versions == [] and result.skipped == [f"{M} v1"]
        assert all(c.blob_exists(d) for d in files_of(c, M, 1))


def test_an_audit_export_never_overwrites_an_earlier_one(central, tmp_path):
    export = tmp_path / "audit.jsonl"
    export.write_text("an earlier export\n")
    with pytest.raises(FileExistsError, match="name a new file"):
        collect(central, RetentionPolicy(audit_days=-1.0), audit_export=export)
    assert export.read_text() == "an earlier export\n"
    with RegistryClient(central.url, central.admin_token) as c:
        assert c.audit()  # nothing was trimmed
