"""Edge fixtures: a registry holding real tiny builds, and edge nodes pointed at it."""

from __future__ import annotations

import pytest

from artifacts.bundle import verify_bundle
from artifacts.client import RegistryClient
from artifacts.publish import publish_version
from artifacts.signing import load_signing_key
from artifacts.targets import CPU_TARGETS
from edge_runtime.config import EdgeConfig, ModelSection, RegistrySection
from tests.servers import CentralServer, EdgeServer


def push_version(client: RegistryClient, model: str, bundle_dirs: list, key, _tmp=None) -> int:
    """Publish built bundles (version 0) as a new version of ``model``."""
    bundles = [verify_bundle(src, None) for src in bundle_dirs]
    return publish_version(client, bundles, model=model, key=key).version


def publish_tiny(client: RegistryClient, tiny_builds, key) -> dict[str, int]:
    """tiny-embedding / tiny-rerank / tiny-classify (all three CPU targets) on ``stable``."""
    versions = {}
    for task in ("embedding", "rerank", "classify"):
        out, _ = tiny_builds[task]
        v = push_version(client, f"tiny-{task}", [out / t for t in CPU_TARGETS], key)
        client.promote(f"tiny-{task}", "stable", v)
        versions[task] = v
    return versions


def edge_config(url: str, token: str, publisher_pub, models, cache, **sections) -> EdgeConfig:
    cfg = EdgeConfig(
        registry=RegistrySection(
            url=url,
            token=token,
            trusted_keys=[str(publisher_pub)],
            poll_interval_s=sections.pop("poll_interval_s", 30.0),
            timeout_s=5.0,
        ),
        models=[ModelSection(name=n, channel=c) for n, c in models],
    )
    cfg.cache.dir = str(cache)
    for section, values in sections.items():
        for k, v in values.items():
            setattr(getattr(cfg, section), k, v)
    return cfg.validate()


@pytest.fixture(scope="module")
def shared_stack(tmp_path_factory, publisher_keys, tiny_builds):
    """One central with the tiny models published, shared by a module's read-only tests."""
    home = tmp_path_factory.mktemp("shared-central")
    server = CentralServer(home, None, trusted=[publisher_keys[1]], local_workers=0).start()
    with RegistryClient(server.url, server.admin_token) as c:
        publish_tiny(c, tiny_builds, load_signing_key(publisher_keys[0]))
    yield server
    server.stop()


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
        cfg = edge_config(
            url or registry.url,
            pull,
            publisher_keys[1],
            models,
            cache or tmp_path / f"edge-cache-{len(started)}",
            **sections,
        )
        edge = EdgeServer(cfg).start()
        started.append(edge)
        return edge

    yield make
    for e in started:
        e.stop()


@pytest.fixture
def tiny_published(admin_client, tiny_builds, key):
    """tiny-embedding / tiny-rerank / tiny-classify v1 (all three CPU targets) on ``stable``."""
    return publish_tiny(admin_client, tiny_builds, key)
