"""Builds that cannot hang, with a real central on loopback (SQLite and PostgreSQL) and real
in-process build workers: a job that no live worker can build ends ``no-capable-worker`` after
its deadline, the build ends with the targets that passed, promotion of a partial build only
when asked, and a missing target built later into the not-yet-promoted version."""

import time

import pytest

from artifacts.client import RegistryClient
from artifacts.errors import ConflictError, ForbiddenError, Unprocessable
from artifacts.wire import BuildRequest
from tests.factories import gpu_node
from tests.integration.central.test_builds import small_data, upload_model, wait_build
from tests.servers import CentralServer

FAST_REAPER = {"lease_seconds": 8.0}  # the reaper sweeps every lease/4 = 2 s


@pytest.fixture
def quick_central(tmp_path, database_url, publisher_keys):
    server = CentralServer(
        tmp_path / "central",
        database_url,
        trusted=[publisher_keys[1]],
        local_workers=0,
        **FAST_REAPER,
    ).start()
    yield server
    server.stop()


def test_a_job_without_a_capable_worker_ends_after_its_deadline(
    quick_central, tiny_models, tmp_path
):
    server = quick_central
    with RegistryClient(server.url, server.admin_token) as c:
        cpu, _ = server.worker_client("cpu-box", ["onnx-fp32"])
        source = upload_model(c, tiny_models["embedding"], tmp_path)
        build_id = c.submit_build(
            BuildRequest(
                model="m",
                task="embedding",
                source_blob=source,
                targets=["tensorrt-fp16"],
                promote_to="stable",
                worker_deadline_s=3.0,
            )
        ).build_id
        deadline = time.monotonic() + 10
        while "ends no-capable-worker at" not in c.build(build_id).jobs[0].reason:
            assert time.monotonic() < deadline, c.build(build_id)
            time.sleep(0.3)
        job = c.build(build_id).jobs[0]
        assert job.state == "waiting-for-capable-worker"
        info = wait_build(c, build_id, timeout=30)
        job = info.jobs[0]
        assert info.state == "failed" and job.state == "no-capable-worker"
        assert "no capable worker for 3 s" in job.reason
        assert "needs an NVIDIA GPU with TensorRT" in job.reason and "cpu-box" in job.reason
        assert info.promoted_to is None
        assert [v.bundles for v in c.list_versions("m")] == [[]]
        # a GPU worker that turns up afterwards is not offered the ended job
        gpu, _ = server.worker_client("gpu-box", ["tensorrt-fp16"], gpu_node())
        assert gpu.lease("gpu-box", 0.5) is None
        cpu.close()
        gpu.close()


def test_a_capable_worker_stops_the_clock(quick_central, tiny_models, tmp_path):
    """Queued behind a live capable worker (here: one that never leases) is not waiting for
    hardware: the job stays queued past the deadline."""
    server = quick_central
    with RegistryClient(server.url, server.admin_token) as c:
        idle, _ = server.worker_client("idle-gpu", ["tensorrt-fp16"], gpu_node())
        source = upload_model(c, tiny_models["embedding"], tmp_path)
        build_id = c.submit_build(
            BuildRequest(
                model="m",
                task="embedding",
                source_blob=source,
                targets=["tensorrt-fp16"],
                worker_deadline_s=1.0,
            )
        ).build_id
        time.sleep(5)  # two reaper sweeps past the deadline
        info = c.build(build_id)
        assert info.state == "running" and info.jobs[0].state == "queued", info
        idle.close()


def test_refusals_change_nothing(quick_central, tiny_models, tmp_path):
    server = quick_central
    with RegistryClient(server.url, server.admin_token) as c:
        source = upload_model(c, tiny_models["embedding"], tmp_path)
        base = {"model": "m", "task": "embedding", "source_blob": source}
        for bad, message in (
            ({"worker_deadline_s": 0.0}, "worker_deadline_s must be above 0"),
            ({"worker_deadline_s": 1e9}, "at most 604800"),
            ({"into_version": 0}, "into_version must be a version number"),
            ({"into_version": 4}, "into_version: model 'm' not found"),
        ):
            with pytest.raises(Unprocessable, match=message):
                c.submit_build(BuildRequest(**base, **bad))
        assert c.builds() == []


@pytest.mark.slow
def test_partial_build_then_the_missing_target_into_its_version(
    tmp_path, publisher_keys, tiny_models
):
    """CPU workers only: tensorrt-fp16 ends no-capable-worker, onnx-fp32 passes and is
    registered; without allow_partial nothing is promoted; a later build adds onnx-int8 into
    that same version and promotes it; with allow_partial a partial build is promoted."""
    server = CentralServer(
        tmp_path / "central", None, trusted=[publisher_keys[1]], local_workers=2, **FAST_REAPER
    ).start()
    try:
        with RegistryClient(server.url, server.admin_token) as c:
            source = upload_model(c, tiny_models["embedding"], tmp_path)
            data = small_data(c, "embedding", tmp_path)
            first = c.submit_build(
                BuildRequest(
                    model="m",
                    task="embedding",
                    source_blob=source,
                    targets=["onnx-fp32", "tensorrt-fp16"],
                    promote_to="stable",
                    worker_deadline_s=3.0,
                    **data,
                )
            )
            info = wait_build(c, first.build_id)
            states = {j.target: j.state for j in info.jobs}
            assert info.state == "partial", info
            assert states == {"onnx-fp32": "passed", "tensorrt-fp16": "no-capable-worker"}
            assert info.promoted_to is None and "NOT promoted to stable" in info.detail
            assert (
                "allow_partial" in info.detail and "tensorrt-fp16: no capable worker" in info.detail
            )
            assert [b.target for b in c.get_version("m", 1).bundles] == ["onnx-fp32"]

            # refusals for building into v1: no such version, other weights, a target it holds
            with pytest.raises(Unprocessable, match="into_version: version m v4 not found"):
                c.submit_build(
                    BuildRequest(model="m", task="embedding", source_blob=source, into_version=4)
                )
            other = upload_model(c, tiny_models["classify"], tmp_path)
            with pytest.raises(Unprocessable, match="was built from"):
                c.submit_build(
                    BuildRequest(model="m", task="embedding", source_blob=other, into_version=1)
                )
            with pytest.raises(ConflictError, match="already holds onnx-fp32"):
                c.submit_build(
                    BuildRequest(
                        model="m",
                        task="embedding",
                        source_blob=source,
                        targets=["onnx-fp32"],
                        into_version=1,
                        **data,
                    )
                )
            stranger = server.token("build", name="someone-else")
            with (
                RegistryClient(server.url, stranger) as other_c,
                pytest.raises(ForbiddenError, match="only they or an admin"),
            ):
                other_c.submit_build(
                    BuildRequest(
                        model="m",
                        task="embedding",
                        source_blob=source,
                        targets=["onnx-int8"],
                        into_version=1,
                    )
                )
            later = c.submit_build(
                BuildRequest(
                    model="m",
                    task="embedding",
                    source_blob=source,
                    targets=["onnx-int8"],
                    promote_to="stable",
                    into_version=1,
                    **data,
                )
            )
            info = wait_build(c, later.build_id)
            assert info.state == "passed" and info.version == 1, info
            assert info.promoted_to == "stable"
            assert sorted(b.target for b in c.get_version("m", 1).bundles) == [
                "onnx-fp32",
                "onnx-int8",
            ]
            assert c.channel("m", "stable").version == 1
            assert [v.version for v in c.list_versions("m")] == [1]  # no new version
            # promoted: sealed, nothing more goes into it
            with pytest.raises(ConflictError, match="sealed"):
                c.submit_build(
                    BuildRequest(
                        model="m",
                        task="embedding",
                        source_blob=source,
                        targets=["openvino-int8"],
                        into_version=1,
                    )
                )

            partial = c.submit_build(
                BuildRequest(
                    model="m2",
                    task="embedding",
                    source_blob=source,
                    targets=["onnx-fp32", "tensorrt-fp16"],
                    promote_to="stable",
                    allow_partial=True,
                    worker_deadline_s=3.0,
                    **data,
                )
            )
            info = wait_build(c, partial.build_id)
            assert info.state == "partial" and info.promoted_to == "stable", info
            assert "allow_partial: the targets that passed" in info.detail
            assert c.channel("m2", "stable").version == 1
    finally:
        server.stop()
