"""Edge fixtures: a registry holding real tiny builds, and edge nodes pointed at it."""

from __future__ import annotations

import shutil

import pytest

from artifacts.bundle import restamp_bundle, verify_bundle
from artifacts.client import RegistryClient
from artifacts.signing import load_signing_key
from edge_runtime.config import EdgeConfig, ModelSection, RegistrySection
from tests.servers import CentralServer, EdgeServer


def push_version(client: RegistryClient, model: str, bundle_dirs: list, key, tmp_path) -> int:
    """Stamp bundles (any version) into a new version of ``model`` and push them."""
    number = client.create_version(model)
    for src in bundle_dirs:
        m = verify_bundle(src, None).manifest
        dest = tmp_path / f"push-{model}-{number}-{m.target.id}"
        shutil.rmtree(dest, ignore_errors=True)
        from artifacts.bundle import read_manifest

        if read_manifest(src).model.name != model:
            import msgspec

            from artifacts.bundle import write_bundle

            mm = read_manifest(src)
            mm = msgspec.structs.replace(mm, model=msgspec.structs.replace(mm.model, name=model))
            files = {f.path: src / f.path for f in mm.files}
            write_bundle(dest, mm, files, key=key)
            src = dest
            dest = tmp_path / f"push2-{model}-{number}-{m.target.id}"
        restamp_bundle(src, dest, version=number, key=key)
        client.push_bundle(verify_bundle(dest, None))
    return number


@pytest.fixture
def registry(tmp_path, publisher_keys):
    server = CentralServer(
        tmp_path / "central", None, trusted=[publisher_keys[1]], local_workers=0
    ).start()
    yield server
    server.stop()


@pytest.fixture
def admin_client(registry):
    with RegistryClient(registry.url, registry.admin_token) as c:
        yield c


@pytest.fixture
def key(publisher_keys):
    return load_signing_key(publisher_keys[0])


@pytest.fixture
def make_edge(registry, publisher_keys, tmp_path):
    """Start edge nodes (stopped at teardown); ``cache`` lets two nodes share a cache dir."""
    started: list[EdgeServer] = []
    pull = registry.token("pull", name="edge")

    def make(
        models=(("tiny-embedding", "stable"),), cache=None, url=None, **sections
    ) -> EdgeServer:
        cfg = EdgeConfig(
            registry=RegistrySection(
                url=url or registry.url,
                token=pull,
                trusted_keys=[str(publisher_keys[1])],
                poll_interval_s=sections.pop("poll_interval_s", 30.0),
                timeout_s=5.0,
            ),
            models=[ModelSection(name=n, channel=c) for n, c in models],
        )
        cfg.cache.dir = str(cache or tmp_path / f"edge-cache-{len(started)}")
        for section, values in sections.items():
            for k, v in values.items():
                setattr(getattr(cfg, section), k, v)
        edge = EdgeServer(cfg.validate()).start()
        started.append(edge)
        return edge

    yield make
    for e in started:
        e.stop()


@pytest.fixture
def tiny_published(admin_client, tiny_builds, key, tmp_path):
    """tiny-embedding / tiny-rerank / tiny-classify v1 (all three CPU targets) on ``stable``."""
    versions = {}
    for task in ("embedding", "rerank", "classify"):
        out, _ = tiny_builds[task]
        dirs = [out / t for t in ("onnx-fp32", "onnx-int8", "openvino-int8")]
        v = push_version(admin_client, f"tiny-{task}", dirs, key, tmp_path)
        admin_client.promote(f"tiny-{task}", "stable", v)
        versions[task] = v
    return versions
