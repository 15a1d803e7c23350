"""Shared test setup: gpu skip with a printed reason, offline Hugging Face, temp homes."""

from __future__ import annotations

import os
import shutil

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _gpu_reason() -> str | None:
    """None when an NVIDIA GPU is usable, else why not."""
    if shutil.which("nvidia-smi") is None:
        return "no NVIDIA GPU: nvidia-smi not found on this machine"
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
        if pynvml.nvmlDeviceGetCount() == 0:
            return "no NVIDIA GPU: NVML reports 0 devices"
    except Exception as exc:
        return f"no NVIDIA GPU: NVML unavailable ({exc})"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _gpu_reason()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def publisher_keys(tmp_path_factory):
    """A publisher key pair shared by the session: (private key path, public key path)."""
    from artifacts.signing import generate_keypair

    priv, pub, _ = generate_keypair(tmp_path_factory.mktemp("keys"))
    return priv, pub


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Tiny random BERT directories for each task."""
    from tests.factories import make_tiny_model

    root = tmp_path_factory.mktemp("tiny-models")
    return {
        task: make_tiny_model(root / task, task) for task in ("embedding", "rerank", "classify")
    }


@pytest.fixture(scope="session")
def tiny_builds(tmp_path_factory, tiny_models, publisher_keys):
    """Bundles for the three CPU targets of every task, built once per session."""
    from builder.pipeline import BuildConfig, build
    from tests.factories import TINY_THRESHOLDS

    out = {}
    for task, model_dir in tiny_models.items():
        dest = tmp_path_factory.mktemp(f"bundles-{task}")
        # A random cross-encoder scores candidates nearly alike: more query groups for rerank,
        # and the tiny models' lower bar (tests.factories.TINY_THRESHOLDS).
        rerank = task == "rerank"
        report = build(
            BuildConfig(
                model_dir=str(model_dir),
                task=task,
                model_name=f"tiny-{task}",
                out_dir=str(dest),
                key_file=str(publisher_keys[0]),
                eval_limit=300 if rerank else 120,
                calibration_limit=40,
                thresholds=TINY_THRESHOLDS[task],
            )
        )
        out[task] = (dest, report)
    return out


@pytest.fixture(scope="session")
def tiny_pruned_build(tmp_path_factory, tiny_models, publisher_keys):
    """tiny-embedding's 1-layer variant (pruned-L1: one of its 2 layers kept, distilled
    briefly) for onnx-fp32 and onnx-int8. A random model's retrieval recall is noise, so the
    teacher-relative recall bar is off here; MiniLM's slow test keeps the defaults."""
    from builder.pipeline import BuildConfig, build
    from tests.factories import TINY_PRUNED_THRESHOLDS

    dest = tmp_path_factory.mktemp("bundles-pruned")
    report = build(
        BuildConfig(
            model_dir=str(tiny_models["embedding"]),
            task="embedding",
            model_name="tiny-embedding",
            out_dir=str(dest),
            key_file=str(publisher_keys[0]),
            targets=["onnx-fp32", "onnx-int8"],
            eval_limit=120,
            calibration_limit=40,
            prune="layers=1,steps=40,budget=60",
            thresholds=TINY_PRUNED_THRESHOLDS,
        )
    )
    return dest, report


@pytest.fixture(scope="session")
def minilm_build(tmp_path_factory, publisher_keys):
    """The real all-MiniLM-L6-v2 built for the three CPU targets (once per session, ~2 min)."""
    from builder.pipeline import BuildConfig, build
    from tests.factories import minilm_dir

    dest = tmp_path_factory.mktemp("minilm-bundles")
    report = build(
        BuildConfig(
            model_dir=str(minilm_dir()),
            task="embedding",
            model_name="product-embedder",
            out_dir=str(dest),
            key_file=str(publisher_keys[0]),
        )
    )
    return dest, report


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request):
    """None (SQLite under the service home) or a fresh PostgreSQL database, dropped after."""
    if request.param == "sqlite":
        yield None
        return
    from bench.fixtures import create_pg_database, drop_pg_database

    url, name = create_pg_database()
    yield url
    drop_pg_database(name)


@pytest.fixture
def central(tmp_path, database_url, publisher_keys):
    """A running central service (no build workers) that trusts the session publisher key."""
    from tests.servers import CentralServer

    server = CentralServer(
        tmp_path / "central", database_url, trusted=[publisher_keys[1]], local_workers=0
    ).start()
    yield server
    server.stop()
