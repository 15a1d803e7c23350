"""Probe, sync, select with fallback: real bundles, a real registry on loopback."""

import os
import time

import numpy as np

from artifacts.bundle import read_manifest, write_bundle
from artifacts.golden import golden_bytes, read_golden
from artifacts.targets import CPU_TARGETS
from tests.factories import synthetic_bundle
from tests.integration.edge_runtime.conftest import push_version

PRUNED = ("onnx-fp32+pruned-L1", "onnx-int8+pruned-L1")


def outcomes(st: dict, model: str = "tiny-embedding") -> dict[str, tuple[str, str]]:
    m = next(x for x in st["models"] if x["model"] == model)
    return {c["target"]: (c["status"], c["detail"]) for c in m["candidates"]}


def model_status(st, name="tiny-embedding"):
    return next(x for x in st["models"] if x["model"] == name)


def test_tensorrt_excluded_int8_chosen_status_explains_all(
    admin_client, tiny_builds, key, tmp_path, make_edge
):
    out, _ = tiny_builds["embedding"]
    trt = tmp_path / "trt"
    synthetic_bundle(trt, key, model="tiny-embedding", version=0, target="tensorrt-fp16")
    v = push_version(
        admin_client,
        "tiny-embedding",
        [out / t for t in ("onnx-fp32", "onnx-int8", "openvino-int8")] + [trt],
        key,
        tmp_path,
    )
    admin_client.promote("tiny-embedding", "stable", v)
    edge = make_edge()
    st = edge.wait_ready()
    o = outcomes(st)
    assert set(o) == {"tensorrt-fp16", "openvino-int8", "onnx-int8", "onnx-fp32"}
    assert o["tensorrt-fp16"][0] == "excluded" and "node has no NVIDIA GPU" in o["tensorrt-fp16"][1]
    assert o["onnx-int8"][0] == "chosen" and "golden passed" in o["onnx-int8"][1]
    assert o["openvino-int8"][0] == "not-tried" and o["onnx-fp32"][0] == "not-tried"
    m = model_status(st)
    assert m["target"] == "onnx-int8" and m["version"] == v and m["state"] == "ready"
    assert (
        m["backend"]["engine"] == "onnxruntime"
        and m["backend"]["providers"] == "CPUExecutionProvider"
    )
    assert st["capabilities"]["arch"] and "cpu_isa" in st["capabilities"]
    metrics = __import__("httpx").get(f"{edge.url}/metrics").text
    assert (
        f'shipyard_active_backend{{model="tiny-embedding",target="onnx-int8",version="{v}"}} 1.0'
        in metrics
    )


def _resign_with(src, dest, key, **replace_files):
    m = read_manifest(src)
    files = {f.path: src / f.path for f in m.files}
    files.update(replace_files)
    return write_bundle(dest, m, files, key=key)


def test_wrong_golden_rejected_at_smoke_check_next_serves(
    admin_client, tiny_builds, key, tmp_path, make_edge
):
    out, _ = tiny_builds["embedding"]
    golden = read_golden(out / "onnx-int8" / "golden.npz")
    wrong = np.random.default_rng(0).normal(size=golden.reference.shape).astype(np.float32)
    bad = _resign_with(
        out / "onnx-int8",
        tmp_path / "bad-int8",
        key,
        **{"golden.npz": golden_bytes(golden.items, wrong)},
    )
    assert bad.signing_key_id
    v = push_version(
        admin_client, "tiny-embedding", [tmp_path / "bad-int8", out / "onnx-fp32"], key, tmp_path
    )
    admin_client.promote("tiny-embedding", "stable", v)
    st = make_edge().wait_ready()
    o = outcomes(st)
    assert o["onnx-int8"][0] == "failed-smoke-check" and "golden FAILED" in o["onnx-int8"][1]
    assert o["onnx-fp32"][0] == "chosen"
    assert model_status(st)["target"] == "onnx-fp32"


def test_corrupt_model_fails_to_load_next_serves(
    admin_client, tiny_builds, key, tmp_path, make_edge
):
    out, _ = tiny_builds["embedding"]
    _resign_with(out / "onnx-int8", tmp_path / "corrupt", key, **{"model.onnx": os.urandom(5000)})
    v = push_version(
        admin_client, "tiny-embedding", [tmp_path / "corrupt", out / "onnx-fp32"], key, tmp_path
    )
    admin_client.promote("tiny-embedding", "stable", v)
    st = make_edge().wait_ready()
    o = outcomes(st)
    assert o["onnx-int8"][0] == "failed-load"
    assert o["onnx-fp32"][0] == "chosen"


def test_policy_deny_prefer_require_gpu(tiny_published, make_edge):
    st = make_edge(backends={"deny": ["onnx-int8"]}).wait_ready()
    o = outcomes(st)
    assert o["onnx-int8"] == ("excluded", "denied by policy (backends.deny)")
    assert o["openvino-int8"][0] == "chosen"
    m = model_status(st)
    assert m["backend"]["engine"] == "openvino" and m["backend"]["inference_precision"] == "f32"
    st = make_edge(backends={"prefer": ["onnx-fp32"]}).wait_ready()
    assert outcomes(st)["onnx-fp32"][0] == "chosen"
    st = make_edge(backends={"allow": ["onnx-int8"]}).wait_ready()
    assert outcomes(st)["onnx-int8"][0] == "chosen" and outcomes(st)["onnx-fp32"][0] == "excluded"
    edge = make_edge(backends={"require_gpu": True})
    st = edge.wait_settled()
    m = model_status(st)
    assert m["state"] == "not-ready" and "no candidate could serve" in m["reason"]
    assert all(s == "excluded" for s, _ in outcomes(st).values())
    assert "require_gpu" in outcomes(st)["onnx-fp32"][1]
    r = __import__("httpx").get(f"{edge.url}/readyz")
    assert r.status_code == 503


def test_measure_mode_times_cpu_candidates(tiny_published, make_edge):
    st = make_edge(backends={"select": "measure", "measure_s": 0.2}).wait_ready()
    o = outcomes(st)
    statuses = sorted(s for s, _ in o.values())
    assert statuses.count("chosen") == 1 and statuses.count("slower") == 2
    assert all("ms vs" in d for s, d in o.values() if s == "slower")


def test_registry_down_warm_cache_and_empty_cache(tiny_published, registry, make_edge, tmp_path):
    cache = tmp_path / "shared-cache"
    first = make_edge(cache=cache)
    first.wait_ready()
    first.stop()
    from artifacts.cli.procs import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    warm = make_edge(cache=cache, url=dead)
    st = warm.wait_ready()
    m = model_status(st)
    assert m["source"] == "cache" and "unreachable" in m["last_sync_error"]
    assert any(e["kind"] == "sync-error" and "local cache" in e["detail"] for e in m["events"])
    cold = make_edge(url=dead)
    st = cold.wait_settled()
    assert (
        model_status(st)["state"] == "not-ready"
        and "no usable cached version" in model_status(st)["reason"]
    )


def test_not_ready_then_ready_when_registry_comes_up(
    tiny_published, registry, make_edge, tmp_path, publisher_keys
):
    from artifacts.cli.procs import free_port
    from tests.servers import CentralServer

    port = free_port()
    edge = make_edge(url=f"http://127.0.0.1:{port}")
    assert model_status(edge.wait_settled())["state"] == "not-ready"
    # the same registry home, now reachable on the port the edge is configured with
    registry.stop()
    again = CentralServer(
        registry.cfg.home_path, None, trusted=[publisher_keys[1]], port=port, local_workers=0
    ).start()
    try:
        st = edge.wait_ready(timeout=90)
        assert model_status(st)["source"] == "registry"
    finally:
        again.stop()


def test_tampered_cache_is_redownloaded_or_rejected(tiny_published, make_edge, tmp_path):
    cache = tmp_path / "tamper-cache"
    make_edge(cache=cache, backends={"deny": ["openvino-int8"]}).wait_ready()
    version = tiny_published["embedding"]
    model_file = cache / "models" / "tiny-embedding" / f"v{version}" / "onnx-int8" / "model.onnx"
    original = model_file.read_bytes()
    data = bytearray(original)
    data[len(data) // 2] ^= 0xFF
    model_file.write_bytes(bytes(data))
    # registry up: the tampered bundle is detected during sync and downloaded again
    st = make_edge(cache=cache, backends={"deny": ["openvino-int8"]}).wait_ready()
    assert model_status(st)["target"] == "onnx-int8"
    assert model_file.read_bytes() == original
    # registry down: the tampered bundle is refused at load, the next candidate serves
    model_file.write_bytes(bytes(data))
    from artifacts.cli.procs import free_port

    st = make_edge(
        cache=cache, url=f"http://127.0.0.1:{free_port()}", backends={"deny": ["openvino-int8"]}
    ).wait_ready()
    o = outcomes(st)
    assert (
        o["onnx-int8"][0] == "failed-verification" and "corrupted or tampered" in o["onnx-int8"][1]
    )
    assert o["onnx-fp32"][0] == "chosen"


def test_a_validly_signed_stranger_in_the_cache_is_replaced(tiny_published, make_edge, tmp_path):
    """Someone who can write the cache plants another validly signed bundle (here the same
    version's onnx-fp32) where onnx-int8 belongs: its signature verifies, but it is not the
    bundle the registry names, so it is downloaded again rather than served."""
    import shutil

    from artifacts.bundle import read_manifest as manifest_of

    cache = tmp_path / "planted-cache"
    make_edge(cache=cache, backends={"deny": ["openvino-int8"]}).wait_ready()
    vdir = cache / "models" / "tiny-embedding" / f"v{tiny_published['embedding']}"
    shutil.rmtree(vdir / "onnx-int8")
    shutil.copytree(vdir / "onnx-fp32", vdir / "onnx-int8")
    st = make_edge(cache=cache, backends={"deny": ["openvino-int8"]}).wait_ready()
    assert model_status(st)["target"] == "onnx-int8"
    assert manifest_of(vdir / "onnx-int8").target.id == "onnx-int8"


def test_hot_swap_to_a_new_version_without_dropping_requests(
    tiny_published, admin_client, tiny_builds, key, tmp_path, make_edge, monkeypatch
):
    """No request dropped across a swap; the replaced model, once drained, is closed and the
    memory it freed handed back to the OS (glibc keeps a closed session's pages otherwise:
    ``bench/swap_memory.py``)."""
    import threading

    import httpx

    from edge_runtime import memory

    trimmed_by: list[str] = []
    trim = memory.trim

    def recorded(*args, **kwargs):
        trimmed_by.append(threading.current_thread().name)
        return trim(*args, **kwargs)

    monkeypatch.setattr(memory, "trim", recorded)
    edge = make_edge(poll_interval_s=0.5)
    st = edge.wait_ready()
    v1 = model_status(st)["version"]
    out, _ = tiny_builds["embedding"]
    v2 = push_version(
        admin_client, "tiny-embedding", [out / "onnx-int8", out / "onnx-fp32"], key, tmp_path
    )
    errors, codes, versions = [], [], set()
    stop = threading.Event()

    def hammer():
        with httpx.Client(base_url=edge.url, timeout=30) as c:
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    r = c.post(
                        "/v1/embeddings",
                        json={"input": [f"query {i} running shoes"], "model": "tiny-embedding"},
                    )
                    codes.append(r.status_code)
                    versions.add(r.headers.get("x-shipyard-model-version"))
                except Exception as exc:  # pragma: no cover - reported below
                    errors.append(exc)

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    admin_client.promote("tiny-embedding", "stable", v2)
    edge.wait(lambda s: model_status(s)["version"] == v2, timeout=60)
    import time

    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()
    assert errors == [] and set(codes) == {200}
    assert {str(v1), str(v2)} <= versions
    events = [e["kind"] for e in model_status(edge.status())["events"]]
    assert "swapped" in events
    deadline = time.monotonic() + 30
    while not any("_drain_and_close" in name for name in trimmed_by):
        assert time.monotonic() < deadline, f"no trim after the old model closed: {trimmed_by}"
        time.sleep(0.05)


def test_a_version_that_fails_here_leaves_the_last_good_one_serving(
    admin_client, tiny_builds, key, tmp_path, make_edge
):
    """Last known good: the newest version fails its smoke check on this node (every
    bundle), so the node keeps — or, restarted, goes back to — the newest cached version
    that passes, says `degraded` and why, and tells central."""
    out, _ = tiny_builds["embedding"]
    targets = ("onnx-int8", "onnx-fp32")
    v1 = push_version(admin_client, "tiny-embedding", [out / t for t in targets], key, tmp_path)
    admin_client.promote("tiny-embedding", "stable", v1)
    cache = tmp_path / "lkg-cache"
    edge = make_edge(cache=cache, poll_interval_s=0.5)
    edge.wait_ready()
    for t in targets:
        golden = read_golden(out / t / "golden.npz")
        wrong = np.random.default_rng(1).normal(size=golden.reference.shape).astype(np.float32)
        _resign_with(
            out / t, tmp_path / f"bad-{t}", key, **{"golden.npz": golden_bytes(golden.items, wrong)}
        )
    v2 = push_version(
        admin_client, "tiny-embedding", [tmp_path / f"bad-{t}" for t in targets], key, tmp_path
    )
    admin_client.promote("tiny-embedding", "stable", v2)
    m = model_status(edge.wait(lambda s: model_status(s)["state"] == "degraded", 60))
    assert m["version"] == v1 and f"serving v{v1}, v{v2} failed" in m["reason"], m
    r = __import__("httpx").post(
        f"{edge.url}/v1/embeddings", json={"input": "shoe", "model": "tiny-embedding"}
    )
    assert r.status_code == 200 and r.headers["x-shipyard-model-version"] == str(v1)
    edge.stop()
    # restarted on the same cache while the registry still points at v2
    again = make_edge(cache=cache)
    st = again.wait_ready()
    m = model_status(st)
    assert (m["state"], m["version"]) == ("degraded", v1), m
    assert __import__("httpx").get(f"{again.url}/readyz").status_code == 200  # it serves
    deadline = time.monotonic() + 30
    while True:  # the fleet heartbeat carries it to central
        nodes = [n for n in admin_client.fleet() if n.report.models]
        states = [mm.state for n in nodes for mm in n.report.models if mm.version == v1]
        if "degraded" in states or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert "degraded" in states


def test_a_pruned_variant_is_served_only_when_the_policy_names_it(
    admin_client, tiny_builds, tiny_pruned_build, key, make_edge
):
    """One version carries the full model's bundles and its pruned-L1 variant's. By default
    the node serves the full model and says why the variant was not taken; with
    ``prefer = ["pruned"]`` it serves the variant (its own answers), and measuring speed never
    swaps one model for the other."""
    import httpx

    from artifacts.textproc import TextEncoder, run_items
    from builder.runners import bundle_runner

    full, _ = tiny_builds["embedding"]
    pruned, report = tiny_pruned_build
    assert report.ok
    v = push_version(
        admin_client,
        "tiny-embedding",
        [full / t for t in CPU_TARGETS] + [pruned / t for t in PRUNED],
        key,
    )
    admin_client.promote("tiny-embedding", "stable", v)
    plain = make_edge()
    o = outcomes(plain.wait_ready())
    assert o["onnx-int8"][0] == "chosen"
    for t in PRUNED:
        assert o[t][0] == "excluded" and 'backends.prefer = ["pruned"]' in o[t][1]

    variant = make_edge(backends={"prefer": ["pruned"]})
    st = variant.wait_ready()
    assert outcomes(st)["onnx-int8+pruned-L1"][0] == "chosen"
    m = model_status(st)
    assert m["target"] == "onnx-int8+pruned-L1" and m["version"] == v

    texts = ["red running shoes size 44", "usb-c charger 65w"]

    def embed(edge, items=texts):
        r = httpx.post(
            f"{edge.url}/v1/embeddings", json={"model": "tiny-embedding", "input": items}
        )
        assert r.status_code == 200, r.text
        return np.array([d["embedding"] for d in r.json()["data"]])

    bundle = pruned / "onnx-int8+pruned-L1"
    manifest = read_manifest(bundle)
    runner = bundle_runner(bundle, manifest, threads=1)
    direct = run_items(TextEncoder.for_bundle(bundle, manifest), texts, runner, runner.input_names)
    served = embed(variant)
    assert np.allclose(served, direct, atol=1e-4)  # the variant's own answers
    assert not np.allclose(embed(plain), served, atol=1e-2)  # not the full model's

    # run-time failover stays within the variant: its other bundle, never the full model
    svc = variant.node.models["tiny-embedding"]

    def broken(_feeds):
        raise RuntimeError("simulated device fault")

    svc.serving.backend.infer = broken
    fresh = [f"{t} (not cached)" for t in texts]  # the result cache would answer repeats
    again = run_items(TextEncoder.for_bundle(bundle, manifest), fresh, runner, runner.input_names)
    assert np.allclose(embed(variant, fresh), again, atol=2e-2)  # the variant's FP32 bundle
    m = model_status(variant.status())
    assert m["target"] == "onnx-fp32+pruned-L1", m["target"]
    svc.serving.backend.infer = broken  # and when the variant has nothing left: not-ready,
    r = httpx.post(  # not the full model's answers
        f"{variant.url}/v1/embeddings",
        json={"model": "tiny-embedding", "input": ["another uncached text"]},
    )
    assert r.status_code >= 500
    m = model_status(variant.status())
    assert m["target"] != "onnx-int8" and m["state"] == "not-ready", m

    measured = make_edge(backends={"allow": ["pruned"], "select": "measure", "measure_s": 0.2})
    o = outcomes(measured.wait_ready())
    assert {s for t, (s, _) in o.items() if "+" not in t} == {"excluded"}
    assert sorted(s for t, (s, _) in o.items() if "+" in t) == ["chosen", "slower"]
