"""Inspect a Hugging Face model directory: what it is, how it pools, how long its inputs are.

Everything the build decides from the model directory is decided here, once, and recorded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from artifacts.digests import sha256_tree
from builder.errors import ModelDirError

SUPPORTED_MODEL_TYPES = {
    "bert",
    "roberta",
    "xlm-roberta",
    "distilbert",
    "electra",
    "mpnet",
    "deberta-v2",
    "camembert",
    "albert",
    "ernie",
}
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class ModelSource:
    path: Path
    model_type: str
    architectures: list[str]
    hidden_size: int
    num_heads: int
    num_layers: int
    pooling: str  # mean | cls | max (embedding task)
    max_length: int
    labels: list[str]  # id2label order (classify/rerank)
    digest: str
    name: str


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelDirError(f"{path} is not valid JSON: {exc}") from exc


def inspect_model_dir(path: Path) -> ModelSource:
    """Validate ``path`` as a transformers model directory we can export; raise ModelDirError."""
    path = Path(path)
    if not path.is_dir():
        raise ModelDirError(f"model directory {path} does not exist or is not a directory")
    config = _read_json(path / "config.json")
    if not config:
        raise ModelDirError(f"{path} has no config.json: not a Hugging Face model directory")
    model_type = str(config.get("model_type", ""))
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ModelDirError(
            f"model_type {model_type!r} is not supported by the encoder exporter "
            f"(supported: {', '.join(sorted(SUPPORTED_MODEL_TYPES))})"
        )
    weights = [f for f in WEIGHT_FILES if (path / f).is_file()]
    if not weights:
        raise ModelDirError(f"{path} has no weights ({' or '.join(WEIGHT_FILES)})")
    if not ((path / "tokenizer.json").is_file() or (path / "vocab.txt").is_file()):
        raise ModelDirError(f"{path} has no tokenizer (tokenizer.json or vocab.txt)")

    pooling = "mean"
    pool_cfg = _read_json(path / "1_Pooling" / "config.json")
    if pool_cfg.get("pooling_mode_cls_token"):
        pooling = "cls"
    elif pool_cfg.get("pooling_mode_max_tokens"):
        pooling = "max"
    st_cfg = _read_json(path / "sentence_bert_config.json")
    tok_cfg = _read_json(path / "tokenizer_config.json")
    max_pos = int(config.get("max_position_embeddings", 512))
    if model_type in ("roberta", "xlm-roberta", "camembert"):
        max_pos -= 2  # position ids start after the padding index
    max_length = int(
        st_cfg.get("max_seq_length") or min(int(tok_cfg.get("model_max_length", 512)), 512)
    )
    max_length = min(max_length, max_pos)

    id2label = config.get("id2label") or {}
    labels = [str(id2label[k]) for k in sorted(id2label, key=lambda k: int(k))] if id2label else []

    files = [(p.relative_to(path).as_posix(), p) for p in sorted(path.rglob("*")) if p.is_file()]
    files = [
        (n, p)
        for n, p in files
        if not n.startswith(".") and "/." not in n and not n.startswith("onnx/")
    ]
    return ModelSource(
        path=path,
        model_type=model_type,
        architectures=list(config.get("architectures") or []),
        hidden_size=int(config.get("hidden_size", config.get("dim", 0))),
        num_heads=int(config.get("num_attention_heads", config.get("n_heads", 0))),
        num_layers=int(config.get("num_hidden_layers", config.get("n_layers", 0))),
        pooling=pooling,
        max_length=max_length,
        labels=labels,
        digest=sha256_tree(files),
        name=str(config.get("_name_or_path") or path.name),
    )
