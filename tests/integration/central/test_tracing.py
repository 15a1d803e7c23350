"""Central's traces (the SDK's in-memory exporter): one server span per request named by its
route template, with what the request did — the uploaded blob, the submitted build, the
leased job — as attributes, and the trace id in X-Trace-Id."""

from __future__ import annotations

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from artifacts.client import RegistryClient
from artifacts.digests import sha256_bytes
from artifacts.tracing import Tracing
from artifacts.wire import BuildRequest
from tests.integration.central.test_builds import _tar
from tests.servers import CentralServer


def test_build_upload_and_lease_spans(tmp_path, publisher_keys):
    exporter = InMemorySpanExporter()
    server = CentralServer(
        tmp_path / "central",
        None,
        trusted=[publisher_keys[1]],
        local_workers=0,
        tracing=Tracing("shipyard-central", exporter=exporter),
    ).start()
    try:
        with RegistryClient(server.url, server.admin_token) as c:
            data = _tar({"config.json": b"{}", "model.safetensors": b"w"})
            digest = sha256_bytes(data)
            c.upload_blob(digest, data)
            build = c.submit_build(
                BuildRequest(model="m", task="embedding", source_blob=digest, targets=["onnx-fp32"])
            )
            worker, _ = server.worker_client("w1", ["onnx-fp32"])
            lease = worker.lease("w1", 1)
            assert lease is not None
            worker.close()
        spans = exporter.get_finished_spans()
        by_route = {s.attributes.get("http.route"): s for s in spans}
        upload = next(s for s in spans if s.name.startswith("PUT /v1/blobs/"))
        assert upload.attributes["shipyard.blob"] == digest
        assert upload.attributes["shipyard.blob.bytes"] == len(data)
        submit = by_route["/v1/builds"]
        assert submit.name == "POST /v1/builds"
        assert submit.attributes["shipyard.build.id"] == build.build_id
        assert submit.attributes["http.response.status_code"] == 201
        leased = next(s for s in spans if s.name == "POST /v1/workers/{name}/lease")
        assert leased.attributes["shipyard.job.id"] == lease.job_id
        assert leased.attributes["shipyard.phase"] == "build"
    finally:
        server.stop()
