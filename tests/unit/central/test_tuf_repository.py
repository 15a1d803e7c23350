"""Central's TUF repository, read by python-tuf's own client (ngclient): publishing, key
rotation for every role through root, rollback and freeze protection."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from tuf.api import exceptions as tuf_errors
from tuf.ngclient import Updater
from tuf.ngclient.fetcher import FetcherInterface

from central.tuf.repository import ChannelPointer, TufRepository

BASE = "http://repo.test/"


class DirFetcher(FetcherInterface):
    """Serves the repository's files as if over HTTP."""

    def __init__(self, repo: TufRepository) -> None:
        self.repo = repo

    def _fetch(self, url: str) -> Iterator[bytes]:
        rel = url.removeprefix(BASE)
        path = (
            self.repo.targets_dir / rel.removeprefix("targets/")
            if rel.startswith("targets/")
            else self.repo.metadata_dir / rel
        )
        if not path.is_file():
            raise tuf_errors.DownloadHTTPError(f"{url}: 404", 404)
        yield path.read_bytes()


def pointer_via_client(repo: TufRepository, client_dir: Path, root: bytes, path: str) -> dict:
    client_dir.mkdir(parents=True, exist_ok=True)
    bootstrap = None if (client_dir / "root.json").exists() else root
    up = Updater(
        str(client_dir), BASE, None, BASE + "targets/", DirFetcher(repo), bootstrap=bootstrap
    )
    up.refresh()
    info = up.get_targetinfo(path)
    assert info is not None, path
    return json.loads(Path(up.download_target(info, str(client_dir / "t.json"))).read_bytes())


@pytest.fixture
def repo(tmp_path) -> TufRepository:
    r = TufRepository(tmp_path / "tuf", offline_keys=tmp_path / "offline")
    r.init()
    return r


def publish(repo: TufRepository, version: int, model: str = "m", channel: str = "stable") -> None:
    bundles = {"onnx-int8": "sha256:" + str(version) * 64}
    asyncio.run(repo.publish(ChannelPointer(model, channel, version, bundles)))


def test_the_client_follows_publications_across_models_and_rotations(repo, tmp_path):
    root = repo.metadata("1.root.json")
    assert not list((repo.root).glob("offline"))  # offline keys live elsewhere
    publish(repo, 1)
    publish(repo, 1, model="n", channel="canary")
    client = tmp_path / "client"
    assert pointer_via_client(repo, client, root, "m/stable.json")["version"] == 1
    assert pointer_via_client(repo, client, root, "n/canary.json")["version"] == 1
    for role in ("timestamp", "snapshot", "models", "targets", "root"):
        before = repo.metadata("root.json")
        repo.rotate(role)
        publish(repo, len(role))  # something new after each rotation
        got = pointer_via_client(repo, client, root, "m/stable.json")
        assert got["version"] == len(role), role
        if role != "models":  # models is delegated by targets, not listed in root
            assert (
                json.loads(repo.metadata("root.json"))["signed"]["version"]
                > json.loads(before)["signed"]["version"]
            )
    # a fresh node bootstrapped from the very first root still gets there, root by root
    assert pointer_via_client(repo, tmp_path / "fresh", root, "m/stable.json")["version"] == 4


def test_replayed_older_metadata_is_refused(repo, tmp_path):
    publish(repo, 1)
    old = tmp_path / "old"
    shutil.copytree(repo.metadata_dir, old)
    publish(repo, 2)
    root = repo.metadata("1.root.json")
    assert pointer_via_client(repo, tmp_path / "c", root, "m/stable.json")["version"] == 2
    for f in old.iterdir():
        shutil.copyfile(f, repo.metadata_dir / f.name)
    with pytest.raises(tuf_errors.BadVersionNumberError):
        pointer_via_client(repo, tmp_path / "c", root, "m/stable.json")


def test_an_expired_timestamp_is_refused_until_refreshed(tmp_path):
    repo = TufRepository(tmp_path / "tuf", offline_keys=tmp_path / "off", timestamp_expiry_s=1)
    repo.init()
    publish(repo, 1)
    root = repo.metadata("1.root.json")
    import time

    time.sleep(2.1)
    with pytest.raises(tuf_errors.ExpiredMetadataError):
        pointer_via_client(repo, tmp_path / "c", root, "m/stable.json")
    repo.timestamp_expiry = repo.timestamp_expiry * 3600
    asyncio.run(repo.refresh())
    assert pointer_via_client(repo, tmp_path / "c", root, "m/stable.json")["version"] == 1


def test_only_files_the_repository_writes_are_served(repo):
    from artifacts.errors import InvalidNameError, NotFoundError

    for name in ("../central.db", "root.json/../x", "offline.json", "1.root.json.bak"):
        with pytest.raises(NotFoundError):
            repo.metadata(name)
    with pytest.raises(InvalidNameError):
        repo.target("../x", "stable")


@pytest.mark.parametrize("crash_in", ["_snapshot_and_timestamp", "_write", "_online"])
def test_a_crash_mid_publish_is_repaired_by_the_next_publish(repo, tmp_path, monkeypatch, crash_in):
    """Each step of a publish can be the last one before a crash; publishing the channel's
    (current or reverted) pointer again — as central does at start — leaves consistent
    metadata that a client reads."""
    publish(repo, 1)
    root = repo.metadata("1.root.json")
    real = getattr(TufRepository, crash_in)

    def crash(self, *args, **kw):
        if crash_in == "_write" and not args[1].startswith("model-"):
            return real(self, *args, **kw)  # crash only when writing the new model's role
        raise OSError("power cut")

    monkeypatch.setattr(TufRepository, crash_in, crash)
    with pytest.raises(OSError, match="power cut"):
        # a new model (delegation written) or a new version of a known one
        publish(repo, 2, model="n" if crash_in == "_write" else "m")
    monkeypatch.undo()
    if crash_in == "_online":  # crashed after the pointer file: the database still says v1
        publish(repo, 1)
        assert pointer_via_client(repo, tmp_path / "c", root, "m/stable.json")["version"] == 1
        return
    model = "n" if crash_in == "_write" else "m"
    publish(repo, 2, model=model)
    assert pointer_via_client(repo, tmp_path / "c", root, f"{model}/stable.json")["version"] == 2
