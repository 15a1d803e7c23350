"""Layer pruning + distillation on a tiny random BERT (4 layers): real torch, real numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from artifacts.errors import InputError
from artifacts.manifest import TokenizerSpec
from artifacts.textproc import TextEncoder, run_items
from artifacts.variants import PruneSpec
from builder.data.datasets import calibration_items, eval_splits
from builder.prune import make_student
from builder.reference import TorchReference
from builder.source import inspect_model_dir
from tests.factories import make_tiny_model

NAMES = ["input_ids", "attention_mask", "token_type_ids"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return inspect_model_dir(make_tiny_model(tmp_path_factory.mktemp("t4") / "m", layers=4))


@pytest.fixture(scope="module")
def tokenizer(teacher):
    spec = TokenizerSpec(max_length=128, pad_token_id=0)
    return teacher.path / "tokenizer.json", spec


@pytest.fixture(scope="module")
def texts():
    return calibration_items("embedding", None, limit=600)


def student(teacher, tokenizer, texts, dest: Path, steps: int):
    return make_student(
        teacher,
        "embedding",
        PruneSpec(2, steps=steps, budget_s=120),
        tokenizer,
        texts,
        dest,
        threads=1,
    )


def test_the_student_really_has_k_layers(teacher, tokenizer, texts, tmp_path):
    src, report = student(teacher, tokenizer, texts, tmp_path / "s", steps=5)
    assert src.num_layers == 2 and teacher.num_layers == 4
    assert len(report.kept) == 2 and len(report.drop_order) == 2
    assert sorted(report.kept + report.drop_order) == [0, 1, 2, 3]
    from safetensors import safe_open

    with safe_open(str(tmp_path / "s" / "model.safetensors"), "pt") as f:
        names = list(f.keys())
    layers = {k.split(".")[2] for k in names if k.startswith("encoder.layer.")}
    assert layers == {"0", "1"}
    assert (tmp_path / "s" / "tokenizer.json").is_file()  # tokenizes like its teacher


def test_distillation_beats_plain_layer_dropping_on_unseen_text(
    teacher, tokenizer, texts, tmp_path
):
    """Measured on the held-out eval texts (never distilled on): the distilled student is
    closer to its teacher than the same layers dropped without training."""
    plain, r0 = student(teacher, tokenizer, texts, tmp_path / "plain", steps=0)
    distilled, r1 = student(teacher, tokenizer, texts, tmp_path / "distilled", steps=150)
    assert r0.kept == r1.kept  # the same layers: only the training differs
    assert r0.steps == 0 and r1.steps == 150
    assert r1.loss_end < r1.loss_start * 0.7  # held-back calibration loss
    split = eval_splits("embedding", None)[0]
    items = split.items("embedding")[:400]
    encoder = TextEncoder(*tokenizer)

    def outputs(src):
        return run_items(encoder, items, TorchReference(src, "embedding", threads=1), NAMES)

    ref = outputs(teacher)
    cos_plain = float((outputs(plain) * ref).sum(1).mean())
    cos_distilled = float((outputs(distilled) * ref).sum(1).mean())
    print(f"cosine to the teacher: plain {cos_plain:.4f}, distilled {cos_distilled:.4f}")
    assert cos_distilled > cos_plain + 0.02, (cos_plain, cos_distilled)
    assert np.isfinite(cos_distilled)


def test_layers_out_of_range_are_refused(teacher, tokenizer, texts, tmp_path):
    for k in (4, 5):
        with pytest.raises(InputError, match="has 4 layers"):
            make_student(teacher, "embedding", PruneSpec(k), tokenizer, texts, tmp_path / "x")
    with pytest.raises(InputError, match="at least 32"):
        make_student(teacher, "embedding", PruneSpec(2), tokenizer, texts[:5], tmp_path / "y")
