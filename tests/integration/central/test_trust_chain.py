"""The trust chain under attack: every credential on its own, and what it cannot do.

Each test is an attack that worked before enrolled workers, worker-signed bundles with
provenance, independent verification, scoped promotion and expiring tokens existed.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import time

import httpx
import msgspec
import pytest

from artifacts.bundle import write_bundle
from artifacts.client import RegistryClient
from artifacts.digests import sha256_bytes
from artifacts.errors import AuthError, ConflictError, ForbiddenError, Unprocessable
from artifacts.manifest import MANIFEST_FILE, SIGNATURE_FILE
from artifacts.provenance import (
    PROVENANCE_FILE,
    BuildParameters,
    provenance_statement,
    sign_statement,
    verification_statement,
)
from artifacts.signing import SigningKey
from artifacts.wire import BuildRequest, JobDone, Lease
from bench.fixtures import make_manifest
from tests.factories import synthetic_bundle


def _source(c: RegistryClient) -> str:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in {"config.json": b"{}", "model.safetensors": b"w"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    digest = sha256_bytes(buf.getvalue())
    c.upload_blob(digest, buf.getvalue())
    return digest


def forge(
    c: RegistryClient,
    key: SigningKey,
    lease: Lease,
    worker: str,
    dest,
    *,
    params: BuildParameters | None = None,
    provenance: bool = True,
    version: int | None = None,
) -> JobDone:
    """A result a worker could hand in: a bundle it signed (with provenance unless told not)."""
    m = make_manifest(lease.target, name=lease.request.model, version=version or lease.version)
    files: dict[str, bytes] = {"model.onnx": os.urandom(2000), "tokenizer.json": b"{}"}
    if provenance:
        statement = provenance_statement(
            files={p: sha256_bytes(b) for p, b in files.items()},
            params=params or BuildParameters.for_job(lease.request, lease.target, lease.version),
            builder=worker,
            toolchain={},
            metrics={"cosine_min": 1.0},
            started="",
            finished="",
        )
        files[PROVENANCE_FILE] = sign_statement(statement, key)
    written = write_bundle(dest, m, files, key=key, overwrite=True)
    for f in written.files:
        c.upload_blob(f.sha256, dest / f.path)
    return JobDone(
        lease_token=lease.lease_token,
        manifest=base64.b64encode((dest / MANIFEST_FILE).read_bytes()).decode(),
        signature=(dest / SIGNATURE_FILE).read_text(),
    )


def attest(key: SigningKey, lease: Lease, verifier: str, *, passed: bool = True) -> JobDone:
    assert lease.verify is not None
    manifest = base64.b64decode(lease.verify.manifest)
    st = verification_statement(
        subject=f"{lease.request.model}/v{lease.version}/{lease.target}/{MANIFEST_FILE}",
        manifest_digest=sha256_bytes(manifest),
        verifier=verifier,
        builder=lease.verify.builder,
        passed=passed,
        metrics={"cosine_min": 0.999},
        thresholds={"cosine_min": 0.98},
    )
    return JobDone(lease_token=lease.lease_token, attestation=sign_statement(st, key).decode())


@pytest.fixture
def admin(central):
    with RegistryClient(central.url, central.admin_token) as c:
        yield c


def _submit(c: RegistryClient, model: str = "m", **kw) -> int:
    req = BuildRequest(
        model=model, task="embedding", source_blob=_source(c), targets=["onnx-fp32"], **kw
    )
    return c.submit_build(req).build_id


def test_a_build_token_alone_cannot_lease_register_or_sign(central, admin, tmp_path):
    build_id = _submit(admin)
    plain = RegistryClient(central.url, central.token("build", name="ci"))
    with pytest.raises(ForbiddenError, match="not an enrolled worker"):
        plain.lease("local-1", 0)
    with pytest.raises(ForbiddenError):
        plain.register_worker_key("anyone", SigningKey.generate().public_pem().decode())
    assert admin.build(build_id).jobs[0].state == "waiting-for-capable-worker"
    assert [v.bundles for v in admin.list_versions("m")] == [[]]


def test_a_worker_credential_cannot_act_as_another_worker(central, admin):
    _submit(admin)
    a, _ = central.worker_client("worker-a", ["onnx-fp32"])
    central.worker_client("worker-b", ["onnx-fp32"])
    with pytest.raises(ForbiddenError, match="belongs to worker 'worker-a'"):
        a.lease("worker-b", 0)
    with pytest.raises(ForbiddenError):
        a.register_worker_key("worker-b", SigningKey.generate().public_pem().decode())
    with pytest.raises(ForbiddenError, match="worker protocol"):
        _submit(a)


def test_forged_completions_are_refused_and_nothing_is_registered(central, admin, tmp_path):
    build_id = _submit(admin, promote_to="stable")
    evil, key = central.worker_client("evil", ["onnx-fp32"])
    lease = evil.lease("evil", 1)
    assert lease is not None and lease.phase == "build"
    stranger = SigningKey.generate()
    attempts = {
        "signed by a key the worker never registered": (
            forge(evil, stranger, lease, "evil", tmp_path / "a"),
            "not a trusted key",
        ),
        "for another version": (
            forge(evil, key, lease, "evil", tmp_path / "b", version=lease.version + 5),
            "the job is",
        ),
        "without provenance": (
            forge(evil, key, lease, "evil", tmp_path / "c", provenance=False),
            "carries no provenance.json",
        ),
        "provenance for another source": (
            forge(
                evil,
                key,
                lease,
                "evil",
                tmp_path / "d",
                params=dataclasses.replace(
                    BuildParameters.for_job(lease.request, lease.target, lease.version),
                    source="sha256:" + "1" * 64,
                ),
            ),
            "does not match the job",
        ),
        "provenance naming another builder": (
            forge(evil, key, lease, "local-1", tmp_path / "e"),
            "builder",
        ),
    }
    for what, (done, match) in attempts.items():
        with pytest.raises(Unprocessable, match=match):
            evil.job_complete(lease.job_id, done)
        assert admin.build(build_id).jobs[0].state == "running", what
    assert [v.bundles for v in admin.list_versions("m")] == [[]]


def test_a_signed_result_waits_for_a_different_worker_and_only_then_is_registered(
    central, admin, tmp_path
):
    build_id = _submit(admin, promote_to="stable")
    builder, bkey = central.worker_client("builder-1", ["onnx-fp32"])
    lease = builder.lease("builder-1", 1)
    builder.job_complete(lease.job_id, forge(builder, bkey, lease, "builder-1", tmp_path / "b"))
    info = admin.build(build_id)
    assert info.state == "awaiting-verification"
    assert info.jobs[0].state == "awaiting-verification"
    assert "other than builder-1" in info.jobs[0].reason
    assert builder.lease("builder-1", 0.2) is None  # nobody verifies their own build
    assert admin.list_versions("m")[0].bundles == []  # not registered yet
    with pytest.raises(ConflictError):
        admin.promote("m", "stable", info.version)  # nothing to serve
    checker, ckey = central.worker_client("checker-1", ["onnx-fp32"])
    check = checker.lease("checker-1", 1)
    assert check is not None and check.phase == "verify" and check.verify.builder == "builder-1"
    # a verdict signed by another key, or about other bytes, or for the builder: refused
    with pytest.raises(Unprocessable):
        checker.job_complete(check.job_id, attest(bkey, check, "checker-1"))
    checker.job_complete(check.job_id, attest(ckey, check, "checker-1"))
    info = admin.build(build_id)
    assert info.state == "passed" and info.promoted_to == "stable", info
    bundle = admin.get_version("m", info.version).bundles[0]
    assert (bundle.built_by, bundle.verified_by) == ("builder-1", "checker-1")


def test_a_failed_verification_registers_nothing_and_caches_nothing(central, admin, tmp_path):
    build_id = _submit(admin)
    builder, bkey = central.worker_client("builder-1", ["onnx-fp32"])
    lease = builder.lease("builder-1", 1)
    builder.job_complete(lease.job_id, forge(builder, bkey, lease, "builder-1", tmp_path / "b"))
    checker, ckey = central.worker_client("checker-1", ["onnx-fp32"])
    check = checker.lease("checker-1", 1)
    checker.job_complete(check.job_id, attest(ckey, check, "checker-1", passed=False))
    info = admin.build(build_id)
    assert info.state == "failed" and "independent verification by checker-1" in info.jobs[0].reason
    assert admin.list_versions("m")[0].bundles == []
    # the cache holds only verified results: the same request is built again, not served
    again = admin.build(_submit(admin))
    assert [j.state for j in again.jobs] == ["queued"] and not again.jobs[0].cached


def test_promote_to_needs_the_promote_scope(central, admin):
    builder_only = RegistryClient(central.url, central.token("build", name="ci"))
    with pytest.raises(ForbiddenError, match="promote"):
        _submit(builder_only, promote_to="stable")
    assert admin.builds() == []


def test_disabling_a_worker_halts_the_channels_serving_what_it_built(central, admin, tmp_path):
    build_id = _submit(admin, promote_to="stable")
    builder, bkey = central.worker_client("builder-1", ["onnx-fp32"])
    lease = builder.lease("builder-1", 1)
    builder.job_complete(lease.job_id, forge(builder, bkey, lease, "builder-1", tmp_path / "b"))
    checker, ckey = central.worker_client("checker-1", ["onnx-fp32"])
    check = checker.lease("checker-1", 1)
    checker.job_complete(check.job_id, attest(ckey, check, "checker-1"))
    assert admin.build(build_id).promoted_to == "stable"
    admin.disable_worker("builder-1", "key leaked")
    ch = admin.channel("m", "stable")
    assert ch.halted
    assert any("quarantined" in e.detail for e in admin.audit(50) if e.action == "channel.halt")
    with pytest.raises(AuthError):  # its credential is revoked
        builder.lease("builder-1", 0)


def test_revoked_and_expired_tokens_are_refused(central, admin):
    short = admin.create_token("short-lived", ["pull"], expires_in_s=1)
    doomed = admin.create_token("doomed", ["pull"])
    assert RegistryClient(central.url, short).list_models() == []
    token_id = next(t.id for t in admin.tokens() if t.name == "doomed")
    admin.revoke_token(token_id)
    with pytest.raises(AuthError, match="revoked"):
        RegistryClient(central.url, doomed).list_models()
    time.sleep(1.2)
    with pytest.raises(AuthError, match="expired"):
        RegistryClient(central.url, short).list_models()
    states = {t.name: t.state for t in admin.tokens()}
    assert states["doomed"] == "revoked" and states["short-lived"] == "expired"
    assert all("token" not in msgspec.to_builtins(t) for t in admin.tokens())  # never the secret


def test_names_with_a_trailing_newline_are_refused(central, admin):
    h = {"Authorization": f"Bearer {central.admin_token}", "Content-Type": "application/json"}
    r = httpx.post(f"{central.url}/v1/models/prod-embedder%0A/versions", json={}, headers=h)
    assert r.status_code == 422 and "invalid model name" in r.json()["detail"], r.text
    r = httpx.post(f"{central.url}/v1/models/a%0Ab/versions", json={}, headers=h)
    assert r.status_code == 422
    assert admin.list_models() == []


def test_a_promoted_version_takes_no_new_target(central, admin, tmp_path, publisher_keys):
    from artifacts.signing import load_signing_key

    key = load_signing_key(publisher_keys[0])
    v = admin.create_version("product-embedder")
    for target in ("onnx-fp32", "onnx-int8"):
        dest = tmp_path / target
        synthetic_bundle(dest, key, version=v, target=target)
        if target == "onnx-fp32":
            from artifacts.bundle import verify_bundle

            admin.push_bundle(verify_bundle(dest, None))
            admin.promote("product-embedder", "stable", v)
        else:
            from artifacts.bundle import verify_bundle

            with pytest.raises(ConflictError, match="sealed"):
                admin.push_bundle(verify_bundle(dest, None))
    assert [b.target for b in admin.get_version("product-embedder", v).bundles] == ["onnx-fp32"]


def test_anonymous_refusals_are_counted_not_each_audited(central, admin):
    for _ in range(40):
        httpx.post(f"{central.url}/v1/models/m/versions", json={})
    rows = [e for e in admin.audit(200) if e.actor == "anonymous"]
    assert 1 <= len(rows) <= 2 and "unauthenticated attempts" in rows[0].detail


def test_worker_keys_rotate_only_through_an_admin(central, admin):
    w, key = central.worker_client("rotating", ["onnx-fp32"])
    new = SigningKey.generate()
    with pytest.raises(ConflictError, match="reset"):
        w.register_worker_key("rotating", new.public_pem().decode())
    admin.reset_worker_key("rotating")
    with pytest.raises(ForbiddenError, match="revoked"):  # rotation retires the old key
        w.register_worker_key("rotating", key.public_pem().decode())
    info = w.register_worker_key("rotating", new.public_pem().decode())
    assert info.key_id == new.key_id != key.key_id


def _built(central, admin, tmp_path, name="builder-1", **submit):
    """A build whose only job ``name`` built and signed (awaiting verification)."""
    build_id = _submit(admin, **submit)
    builder, bkey = central.worker_client(name, ["onnx-fp32"])
    lease = builder.lease(name, 1)
    builder.job_complete(lease.job_id, forge(builder, bkey, lease, name, tmp_path / name))
    assert admin.build(build_id).jobs[0].state == "awaiting-verification"
    return build_id


def test_disabling_a_builder_withdraws_what_it_built_but_nobody_verified(central, admin, tmp_path):
    build_id = _built(central, admin, tmp_path)
    admin.disable_worker("builder-1", "host compromised")
    info = admin.build(build_id)
    assert info.state == "failed", info
    assert "worker builder-1 was disabled" in info.jobs[0].reason
    checker, _ = central.worker_client("checker-1", ["onnx-fp32"])
    assert checker.lease("checker-1", 0.3) is None  # nothing of it is offered for verification
    assert admin.list_versions("m")[0].bundles == []


def test_a_verdict_on_a_disabled_builders_result_registers_nothing(central, admin, tmp_path):
    build_id = _built(central, admin, tmp_path)
    checker, ckey = central.worker_client("checker-1", ["onnx-fp32"])
    check = checker.lease("checker-1", 1)
    assert check is not None and check.phase == "verify"
    admin.disable_worker("builder-1", "key leaked")
    with pytest.raises(ConflictError):  # its verification lease was withdrawn too
        checker.job_complete(check.job_id, attest(ckey, check, "checker-1"))
    assert admin.build(build_id).state == "failed"
    assert admin.list_versions("m")[0].bundles == []


def test_jobs_a_disabled_worker_holds_go_back_to_the_queue(central, admin):
    build_id = _submit(admin)
    w, _ = central.worker_client("flaky", ["onnx-fp32"])
    assert w.lease("flaky", 1) is not None
    admin.disable_worker("flaky", "misbehaving")
    assert admin.build(build_id).jobs[0].state in ("queued", "waiting-for-capable-worker")
    other, _ = central.worker_client("other", ["onnx-fp32"])
    lease = other.lease("other", 1)
    assert lease is not None and lease.phase == "build"


def test_a_disabled_builders_cache_entries_serve_nobody(central, admin, tmp_path):
    build_id = _built(central, admin, tmp_path)
    checker, ckey = central.worker_client("checker-1", ["onnx-fp32"])
    check = checker.lease("checker-1", 1)
    checker.job_complete(check.job_id, attest(ckey, check, "checker-1"))
    assert admin.build(build_id).state == "passed"
    assert admin.build(_submit(admin)).jobs[0].cached  # an identical request is served
    admin.disable_worker("builder-1", "key leaked")
    # checker-1 is still enabled with the same (empty) toolchain: the key alone must not match
    again = admin.build(_submit(admin))
    assert [j.state for j in again.jobs] == ["queued"] and not again.jobs[0].cached


def test_re_enrolling_a_disabled_worker_needs_a_new_key(central, admin):
    _w, key = central.worker_client("phoenix", ["onnx-fp32"])
    admin.disable_worker("phoenix", "stolen laptop")
    assert admin.workers()[0].key_id is not None
    fresh = RegistryClient(central.url, admin.enroll_worker("phoenix", ["onnx-fp32"]))
    assert next(i for i in admin.workers() if i.name == "phoenix").key_id is None
    with pytest.raises(ForbiddenError, match="revoked"):  # the (maybe stolen) old key
        fresh.register_worker_key("phoenix", key.public_pem().decode())
    info = fresh.register_worker_key("phoenix", SigningKey.generate().public_pem().decode())
    assert info.key_id != key.key_id


def test_a_quarantined_version_is_not_promoted_or_rolled_back_to(central, admin, tmp_path):
    build_id = _built(central, admin, tmp_path)
    checker, ckey = central.worker_client("checker-1", ["onnx-fp32"])
    check = checker.lease("checker-1", 1)
    checker.job_complete(check.job_id, attest(ckey, check, "checker-1"))
    v = admin.build(build_id).version
    admin.disable_worker("builder-1", "key leaked")
    promoter = RegistryClient(central.url, central.token("promote", name="release"))
    with pytest.raises(ConflictError, match="quarantined.*builder-1"):
        promoter.promote("m", "stable", v)
    assert admin.promote("m", "stable", v, force=True).version == v  # an admin's decision


def test_a_worker_credential_is_confined_to_the_worker_protocol(central, admin, tmp_path):
    from bench.fixtures import cpu_node

    w, _ = central.worker_client("confined", ["onnx-fp32"])
    with pytest.raises(ForbiddenError, match="worker protocol"):
        w.create_version("m")
    r = httpx.post(
        f"{central.url}/v1/fleet/heartbeat",
        json={"node": "fake", "capabilities": msgspec.to_builtins(cpu_node())},
        headers={"Authorization": w._http.headers["Authorization"]},
    )
    assert r.status_code == 403, r.text
    assert w.list_models() == []  # reading is allowed
    assert admin.list_models() == []


def test_only_the_submitter_or_an_admin_cancels_a_build(central, admin):
    ci = RegistryClient(central.url, central.token("build", name="ci"))
    other = RegistryClient(central.url, central.token("build", name="someone-else"))
    build_id = _submit(ci)
    with pytest.raises(ForbiddenError, match="submitted by 'ci'"):
        other.cancel_build(build_id)
    assert ci.cancel_build(build_id).state == "cancelled"
    assert admin.cancel_build(_submit(ci)).state == "cancelled"
