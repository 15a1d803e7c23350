"""A build worker's caches (downloaded blobs, extracted sources, bundle downloads) shrink: what
has not been used for a week goes, what a job just used stays."""

import os
import time

from builder.worker import CACHE_MAX_AGE_S, Worker, WorkerConfig


def test_prune_removes_only_what_went_unused(tmp_path):
    w = Worker(
        WorkerConfig(central="http://127.0.0.1:9", token="t", name="w", work_dir=str(tmp_path))
    )
    old = time.time() - CACHE_MAX_AGE_S - 60
    for sub in ("blobs", "src", "downloads"):
        (tmp_path / sub).mkdir(exist_ok=True)
    stale_blob = tmp_path / "blobs" / "aa"
    fresh_blob = tmp_path / "blobs" / "bb"
    stale_src = tmp_path / "src" / "cc"
    for f in (stale_blob, fresh_blob):
        f.write_bytes(b"x")
    (stale_src / "model").mkdir(parents=True)
    (stale_src / "model" / "config.json").write_text("{}")
    for path in (stale_blob, stale_src):
        os.utime(path, (old, old))
    assert w.prune() == 2
    assert fresh_blob.exists() and not stale_blob.exists() and not stale_src.exists()
    assert (tmp_path / "keys").is_dir()  # its key is never touched
    w.client.close()
