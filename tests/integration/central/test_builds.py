"""The build service with real worker processes and a real central on loopback."""

import io
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time

import httpx
import msgspec
import psutil
import pytest

from artifacts import sourcetar
from artifacts.bundle import read_provenance
from artifacts.client import BundleRef, PullTarget, RegistryClient
from artifacts.digests import sha256_bytes, sha256_file
from artifacts.errors import AuthError, ConflictError, ForbiddenError, Unprocessable
from artifacts.signing import TrustedKeys
from artifacts.wire import BuildRequest, JobDone
from tests.factories import TINY_PRUNED_THRESHOLDS, TINY_THRESHOLDS, gpu_node, small_datasets
from tests.servers import CentralServer

TERMINAL = ("passed", "partial", "failed", "cancelled")


def upload_model(c: RegistryClient, model_dir, tmp_path) -> str:
    tar = sourcetar.create(model_dir, tmp_path / f"{model_dir.name}.tar")
    digest = sha256_file(tar)
    c.upload_blob(digest, tar)
    return digest


def small_data(c: RegistryClient, task: str, tmp_path) -> dict:
    """Small calibration + eval sets as blobs, and the tiny models' gate: these tests are about
    the build service, so the builds should be quick (the quantisation ladders are tested in
    tests/integration/builder)."""
    blobs: dict = {"thresholds": TINY_THRESHOLDS[task]}
    for kind, path in zip(
        ("calibration_blob", "eval_blob"), small_datasets(tmp_path / "data", task), strict=True
    ):
        blobs[kind] = sha256_file(path)
        c.upload_blob(blobs[kind], path)
    return blobs


def wait_build(c: RegistryClient, build_id: int, timeout: float = 240.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = c.build(build_id)
        if info.state in TERMINAL:
            return info
        time.sleep(0.5)
    raise AssertionError(f"build {build_id} did not finish: {c.build(build_id)}")


def start_worker(url: str, token: str, name: str, work_dir) -> subprocess.Popen:
    env = {**os.environ, "SHIPYARD_WORKER_TOKEN": token}
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from builder.cli import main; sys.exit(main())",
            "worker",
            "--central",
            url,
            "--name",
            name,
            "--work-dir",
            str(work_dir),
            "--lease-wait",
            "2",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(f"{work_dir}.log", "wb"),
        start_new_session=True,
    )


def stop_worker(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def central_with_worker(tmp_path, publisher_keys):
    server = CentralServer(
        tmp_path / "central", None, trusted=[publisher_keys[1]], local_workers=2
    ).start()
    yield server
    server.stop()


def test_submit_build_registers_promotes_and_caches(central_with_worker, tiny_models, tmp_path):
    server = central_with_worker
    with RegistryClient(server.url, server.admin_token) as c:
        source = upload_model(c, tiny_models["classify"], tmp_path)
        req = BuildRequest(
            model="tiny-cls",
            task="classify",
            source_blob=source,
            promote_to="stable",
            **small_data(c, "classify", tmp_path),
        )
        created = c.submit_build(req)
        assert [j.target for j in created.jobs] == ["onnx-fp32", "onnx-int8", "openvino-int8"]
        info = wait_build(c, created.build_id)
        assert info.state == "passed", info
        assert info.version == 1 and info.promoted_to == "stable"
        assert all(j.state == "passed" and not j.cached for j in info.jobs)
        for j in info.jobs:  # built by one enrolled worker, verified by the other
            built = next(h for h in j.history if "built and signed by" in h).split()[6]
            verified = next(h for h in j.history if h.startswith("verified by")).split()[-1]
            assert {built, verified} == {"local-1", "local-2"}, j.history
        assert c.channel("tiny-cls", "stable").version == 1
        logs = c.build_logs(created.build_id)
        assert any("leased by local-1" in line.line for line in logs)
        assert {line.target for line in logs} == {"onnx-fp32", "onnx-int8", "openvino-int8"}
        # registered bundles are signed by the workers that built them (their own keys): an
        # edge trusting those keys verifies them; central holds no key that signs bundles
        home = server.cfg.home_path
        trusted = TrustedKeys.from_paths(
            sorted((home / "worker").glob("local-*/keys/publisher.pub"))
        )
        assert not (home / "keys").exists()
        version = c.get_version("tiny-cls", 1)
        for b in version.bundles:
            assert {b.built_by, b.verified_by} == {"local-1", "local-2"}
            got = c.pull_bundle(
                c.bundle_document("tiny-cls", 1, b.target),
                PullTarget(tmp_path / "pulled" / b.target, tmp_path / "dl"),
                trusted,
                expect=BundleRef("tiny-cls", 1, b.target),
            )
            assert got.manifest.model.version == 1 and got.manifest.quality.passed
            assert read_provenance(got.path)["statement"]["predicate"]["runDetails"]["builder"][
                "id"
            ].endswith(b.built_by)
        # the same request again: the identical verified build answers it — no rebuild, no
        # new version (a build's bundles are signed for the version they were built into)
        again = wait_build(c, c.submit_build(req).build_id)
        assert again.state == "passed" and again.version == 1, again
        assert all(j.cached and j.attempts == 0 for j in again.jobs)
        assert c.list_versions("tiny-cls")[-1].version == 1


def test_a_pruned_variant_is_built_into_the_same_version(
    central_with_worker, tiny_models, tmp_path
):
    """The full model, then its pruned-L1 variant into the same version: the variant's job is
    built by one worker and re-verified by the other against the teacher on task quality, and
    the version carries both (keys onnx-fp32 and onnx-fp32+pruned-L1)."""
    server = central_with_worker
    with RegistryClient(server.url, server.admin_token) as c:
        source = upload_model(c, tiny_models["embedding"], tmp_path)
        data = small_data(c, "embedding", tmp_path)
        full = wait_build(
            c,
            c.submit_build(
                BuildRequest(
                    model="tiny-emb",
                    task="embedding",
                    source_blob=source,
                    targets=["onnx-fp32"],
                    **data,
                )
            ).build_id,
        )
        assert full.state == "passed", full
        pruned_req = BuildRequest(
            model="tiny-emb",
            task="embedding",
            source_blob=source,
            targets=["onnx-fp32"],
            eval_blob=data["eval_blob"],
            thresholds=TINY_PRUNED_THRESHOLDS,
            prune="layers=1,steps=20,budget=60",
            into_version=full.version,
        )
        pruned = wait_build(c, c.submit_build(pruned_req).build_id, timeout=400)
        assert pruned.state == "passed", pruned
        assert pruned.version == full.version
        (job,) = pruned.jobs
        assert any(h.startswith("verified by") for h in job.history), job.history
        version = c.get_version("tiny-emb", full.version)
        keys = sorted(b.target for b in version.bundles)
        assert keys == ["onnx-fp32", "onnx-fp32+pruned-L1"]
        b = next(b for b in version.bundles if b.target == "onnx-fp32+pruned-L1")
        assert b.manifest["target"]["variant"] == "pruned-L1"
        assert b.manifest["quality"]["basis"] == "task"
        trusted = TrustedKeys.from_paths(
            sorted((server.cfg.home_path / "worker").glob("local-*/keys/publisher.pub"))
        )
        got = c.pull_bundle(
            c.bundle_document("tiny-emb", full.version, b.target),
            PullTarget(tmp_path / "pulled", tmp_path / "dl"),
            trusted,
            expect=BundleRef("tiny-emb", full.version, b.target),
        )
        params = read_provenance(got.path)["statement"]["predicate"]["buildDefinition"]
        assert params["externalParameters"]["prune"] == "layers=1,steps=20,budget=60"
        # the same variant again into that version: it already holds it
        with pytest.raises(ConflictError, match="already holds onnx-fp32\\+pruned-L1"):
            c.submit_build(pruned_req)


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_two_remote_workers_every_job_built_once(
    tmp_path, database_url, publisher_keys, tiny_models
):
    server = CentralServer(
        tmp_path / "central", database_url, trusted=[publisher_keys[1]], local_workers=0
    ).start()
    workers = []
    try:
        cpu = ["onnx-fp32", "onnx-int8", "openvino-int8"]
        workers = [
            start_worker(
                server.url, server.enroll(f"remote-{i}", cpu), f"remote-{i}", tmp_path / f"w{i}"
            )
            for i in range(2)
        ]
        with RegistryClient(server.url, server.admin_token) as c:
            ids = []
            for task in ("embedding", "classify"):
                source = upload_model(c, tiny_models[task], tmp_path)
                req = BuildRequest(
                    model=f"tiny-{task}",
                    task=task,
                    source_blob=source,
                    targets=["onnx-fp32", "onnx-int8"],  # the quick ones: leasing is under test
                    **small_data(c, task, tmp_path),
                )
                ids.append(c.submit_build(req).build_id)
            infos = [wait_build(c, i, timeout=300) for i in ids]
        jobs = [j for info in infos for j in info.jobs]
        assert len(jobs) == 4
        assert all(info.state == "passed" for info in infos), infos
        assert all(j.attempts == 1 and j.state == "passed" for j in jobs)
        for j in jobs:  # built exactly once, verified exactly once, by the other worker
            builds = [h for h in j.history if h.startswith("attempt") and "leased by" in h]
            checks = [h for h in j.history if h.startswith("verification") and "leased by" in h]
            assert len(builds) == 1 and len(checks) == 1, j.history
            assert builds[0].split()[-1] != checks[0].split()[-1]
    finally:
        for w in workers:
            stop_worker(w)
        server.stop()


def test_sigkilled_worker_lease_expires_and_another_finishes(tmp_path, publisher_keys, tiny_models):
    server = CentralServer(
        tmp_path / "central", None, trusted=[publisher_keys[1]], local_workers=0, lease_seconds=3.0
    ).start()
    a = b = c_ = None
    try:
        cpu = ["onnx-fp32", "onnx-int8", "openvino-int8"]
        a = start_worker(server.url, server.enroll("doomed", cpu), "doomed", tmp_path / "wa")
        with RegistryClient(server.url, server.admin_token) as c:
            source = upload_model(c, tiny_models["embedding"], tmp_path)
            build_id = c.submit_build(
                BuildRequest(
                    model="tiny-emb",
                    task="embedding",
                    source_blob=source,
                    targets=["onnx-int8"],
                    **small_data(c, "embedding", tmp_path),
                )
            ).build_id
            deadline = time.monotonic() + 120
            while c.build(build_id).jobs[0].state != "running":
                assert time.monotonic() < deadline
                time.sleep(0.2)
            time.sleep(1.0)  # the build child is working now
            children = psutil.Process(a.pid).children(recursive=True)
            os.killpg(a.pid, signal.SIGKILL)
            a.wait()
            psutil.wait_procs(children, timeout=10)
            assert not any(
                p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in children
            ), "orphaned build process"
            b = start_worker(server.url, server.enroll("rescuer", cpu), "rescuer", tmp_path / "wb")
            c_ = start_worker(server.url, server.enroll("checker", cpu), "checker", tmp_path / "wc")
            info = wait_build(c, build_id, timeout=180)
            # whichever of the two leased first built it; the other verified it
            built_by = c.get_version("tiny-emb", info.version).bundles[0].built_by
        assert built_by in ("rescuer", "checker")
        job = info.jobs[0]
        assert info.state == "passed" and job.attempts == 2, info
        assert any("lease of doomed expired" in h for h in job.history)
        assert any(f"built and signed by {built_by}" in h for h in job.history)
    finally:
        for w in (a, b, c_):
            if w is not None:
                stop_worker(w)
        server.stop()


def test_tensorrt_job_waits_for_a_capable_worker_and_cancel(central, tiny_models, tmp_path):
    with RegistryClient(central.url, central.admin_token) as c:
        worker, _ = central.worker_client("cpu-box", ["onnx-fp32", "onnx-int8"])
        source = upload_model(c, tiny_models["embedding"], tmp_path)
        build_id = c.submit_build(
            BuildRequest(model="m", task="embedding", source_blob=source, targets=["tensorrt-fp16"])
        ).build_id
        job = c.build(build_id).jobs[0]
        assert job.state == "waiting-for-capable-worker"
        assert (
            "needs an NVIDIA GPU with TensorRT" in job.reason
            and "cpu-box (x86_64, no GPU, no TensorRT)" in job.reason
        )
        assert worker.lease("cpu-box", 0.2) is None  # not offered to a CPU worker
        # a GPU worker would be offered it
        gpu, _ = central.worker_client("gpu-box", ["tensorrt-fp16"], gpu_node())
        assert c.build(build_id).jobs[0].state == "queued"
        cancelled = c.cancel_build(build_id)
        assert cancelled.state == "cancelled" and cancelled.jobs[0].state == "cancelled"
        assert gpu.lease("gpu-box", 0.2) is None
        with pytest.raises(ConflictError):
            c.cancel_build(build_id)
        assert [v.bundles for v in c.list_versions("m")] == [[]]  # its version stays empty
        worker.close()
        gpu.close()


def test_leasing_is_exclusive_under_concurrency(central):
    """Many workers hammer the lease endpoint: every job is handed out exactly once."""
    with RegistryClient(central.url, central.admin_token) as c:
        data = _tar({"config.json": b"{}", "model.safetensors": b"w"})
        digest = sha256_bytes(data)
        c.upload_blob(digest, data)
        for i in range(4):
            c.submit_build(BuildRequest(model=f"m{i}", task="embedding", source_blob=digest))
    got: list[int] = []
    lock = threading.Lock()
    clients = [
        central.worker_client(f"w{n}", ["onnx-fp32", "onnx-int8", "openvino-int8"])[0]
        for n in range(6)
    ]

    def worker(n: int) -> None:
        with clients[n] as w:
            while True:
                lease = w.lease(f"w{n}", 0.5)
                if lease is None:
                    return
                with lock:
                    got.append(lease.job_id)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(1, 13))


def test_only_the_lease_holder_completes(tmp_path, publisher_keys):
    server = CentralServer(
        tmp_path / "c", None, trusted=[publisher_keys[1]], local_workers=0, lease_seconds=1.0
    ).start()
    try:
        with RegistryClient(server.url, server.admin_token) as c:
            data = _tar({"config.json": b"{}", "model.safetensors": b"w"})
            digest = sha256_bytes(data)
            c.upload_blob(digest, data)
            build_id = c.submit_build(
                BuildRequest(model="m", task="embedding", source_blob=digest, targets=["onnx-fp32"])
            ).build_id
            slow, _ = server.worker_client("slow", ["onnx-fp32"])
            fast, _ = server.worker_client("fast", ["onnx-fp32"])
            first = slow.lease("slow", 1)
            time.sleep(2.5)  # no heartbeat: the lease expires
            second = fast.lease("fast", 2)
            assert second is not None and second.job_id == first.job_id and second.attempt == 2
            with pytest.raises(ConflictError, match="not leased to you"):
                slow.heartbeat(first.job_id, first.lease_token)
            with pytest.raises(ConflictError):
                slow.job_complete(first.job_id, JobDone(lease_token=first.lease_token, manifest=""))
            # the right lease token in the wrong worker's hands: refused
            with pytest.raises(ForbiddenError, match="belongs to worker 'slow'"):
                slow.job_fail(second.job_id, JobDone(lease_token=second.lease_token, reason="x"))
            fast.job_fail(
                second.job_id,
                JobDone(lease_token=second.lease_token, reason="deterministic failure"),
            )
            info = c.build(build_id)
            assert info.state == "failed" and "deterministic failure" in info.jobs[0].reason
            slow.close()
            fast.close()
    finally:
        server.stop()


def _tar(
    files: dict[str, bytes], *, symlink: str | None = None, name_override: str | None = None
) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name_override or name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if symlink:
            info = tarfile.TarInfo("link")
            info.type = tarfile.SYMTYPE
            info.linkname = symlink
            tar.addfile(info)
    return buf.getvalue()


def test_bad_build_input_is_refused_and_nothing_queued(central):
    h = {"Authorization": f"Bearer {central.admin_token}"}
    ok_model = {"config.json": b"{}", "model.safetensors": b"w"}
    cases = {
        "traversal": _tar(
            {"config.json": b"{}", "model.safetensors": b"w", "x": b"evil"}, name_override=None
        ),
        "symlink": _tar(ok_model, symlink="/etc/passwd"),
        "not-a-model": _tar({"readme.txt": b"hi"}),
        "not-a-tar": b"plainly not an archive",
    }
    # a member named ../../escape
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in {**ok_model, "../../escape": b"x"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    cases["traversal"] = buf.getvalue()
    digests = {}
    for label, data in cases.items():
        digest = sha256_bytes(data)
        r = httpx.put(
            f"{central.url}/v1/blobs/{digest}",
            content=data,
            headers={**h, "Content-Type": "application/octet-stream"},
        )
        assert r.status_code == 201
        digests[label] = digest
    expectations = {
        "traversal": "escapes",
        "symlink": "link",
        "not-a-model": "config.json",
        "not-a-tar": "not a readable tar",
    }
    with RegistryClient(central.url, central.admin_token) as c:
        for label, match in expectations.items():
            with pytest.raises(Unprocessable, match=match) as e:
                c.submit_build(
                    BuildRequest(model="m", task="embedding", source_blob=digests[label])
                )
            assert e.value.status == 422
        good = sha256_bytes(_tar(ok_model))
        httpx.put(
            f"{central.url}/v1/blobs/{good}",
            content=_tar(ok_model),
            headers={**h, "Content-Type": "application/octet-stream"},
        )
        for bad, match in [
            ({"targets": ["tensorrt-fp64"]}, "unknown target"),
            ({"targets": ["onnx-fp16"]}, "no builder"),
            ({"targets": []}, "no targets"),
            ({"task": "summarize"}, "unknown task"),
            ({"model": "Bad Name"}, "invalid model name"),
            ({"source_blob": "sha256:" + "9" * 64}, "has not been uploaded"),
            ({"thresholds": {"nonsense": 1.0}}, "unknown threshold"),
            ({"promote_to": "../x"}, "invalid channel"),
            ({"prune": "layers=0"}, "between 1 and 48"),
            ({"prune": "layers=4;x"}, "layers=K"),
            ({"prune": "layers=4"}, "canonical"),
            (
                {"prune": "layers=4,steps=600,budget=120", "thresholds": {"cosine_min": 0.9}},
                "unknown threshold",
            ),
        ]:
            body = {"model": "m", "task": "embedding", "source_blob": good, **bad}
            r = httpx.post(f"{central.url}/v1/builds", json=body, headers=h)
            assert 400 <= r.status_code < 500 and match in r.json()["detail"], (bad, r.text)
        r = httpx.post(
            f"{central.url}/v1/builds",
            json={"model": "m", "task": "embedding", "source_blob": good},
        )
        assert r.status_code == 401
        pull = RegistryClient(central.url, central.token("pull"))
        with pytest.raises(AuthError):
            pull.submit_build(BuildRequest(model="m", task="embedding", source_blob=good))
        pull.close()
        assert c.builds() == []
    assert msgspec  # keep import used


@pytest.mark.slow
def test_a_blob_store_outage_at_registration_defers_the_verified_job(
    central_with_worker, tiny_models, tmp_path, monkeypatch
):
    """The registry failing while a verified bundle is registered is not a verdict on the
    bundle: the job goes back to verification (the attempt not counted) and passes later."""
    from central.blobs.oci import BlobStoreUnavailable
    from central.registry.service import RegistryService

    real = RegistryService.put_bundle
    outages = []

    async def flaky(self, upload, *args, **kw):
        if not outages:
            outages.append(upload.target)
            raise BlobStoreUnavailable("registry http://oci.test answered 503 to PUT manifest")
        return await real(self, upload, *args, **kw)

    monkeypatch.setattr(RegistryService, "put_bundle", flaky)
    with RegistryClient(central_with_worker.url, central_with_worker.admin_token) as c:
        source = upload_model(c, tiny_models["embedding"], tmp_path)
        info = wait_build(
            c,
            c.submit_build(
                BuildRequest(
                    model="tiny-emb",
                    task="embedding",
                    source_blob=source,
                    targets=["onnx-fp32"],
                    **small_data(c, "embedding", tmp_path),
                )
            ).build_id,
        )
    job = info.jobs[0]
    assert outages == ["onnx-fp32"] and info.state == "passed", info
    assert any("the blob store failed" in h for h in job.history), job.history
    assert sum(h.startswith("verified by") for h in job.history) == 2
