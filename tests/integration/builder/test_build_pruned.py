"""Pruned variants built for real (tiny random BERT): the student, its bundles, its gate."""

from __future__ import annotations

import json

import onnx
import pytest

from artifacts.bundle import read_manifest, verify_bundle
from artifacts.errors import InputError
from artifacts.golden import smoke_check
from artifacts.signing import TrustedKeys
from builder.pipeline import BuildConfig, build
from builder.runners import bundle_runner
from tests.unit.artifacts.test_cli_local import artifact

KEYS = ("onnx-fp32+pruned-L1", "onnx-int8+pruned-L1")


def layer_norms(path) -> int:
    return sum(n.op_type == "LayerNormalization" for n in onnx.load(str(path)).graph.node)


def test_variant_bundles_are_written_under_their_keys(tiny_pruned_build, publisher_keys):
    dest, report = tiny_pruned_build
    assert report.ok, [(t.target, t.reason) for t in report.targets]
    assert [t.target for t in report.targets] == list(KEYS)
    for key in KEYS:
        v = verify_bundle(dest / key, TrustedKeys.from_paths([publisher_keys[1]]))
        m = v.manifest
        assert m.bundle_key() == key and m.target.variant == "pruned-L1"
        assert m.quality.basis == "task" and m.quality.reference == "torch-fp32 teacher"
        assert set(m.quality.thresholds) == {
            "relevant_recall10_ratio",
            "relevant_recall10_ratio_point",
            "batch_invariance_min_cosine",
        }
        assert "relevant_recall10_ratio" in m.quality.intervals  # teacher-relative, with margin
        c = m.compression
        assert c is not None and c.layers_total == 2 and len(c.layers_kept) == 1
        assert c.steps == 40 and c.loss_end < c.loss_start
        assert c.student_digest.startswith("sha256:")
        assert c.student_digest != m.model.source_digest  # the teacher stays the source
        runner = bundle_runner(v.path, m, threads=1)
        assert smoke_check(v.path, m, runner, runner.input_names).passed


def test_the_shipped_graph_has_the_students_layers(tiny_pruned_build, tiny_models):
    dest, _ = tiny_pruned_build
    # embeddings LayerNorm + 2 per transformer layer: the 2-layer teacher exports 5
    assert layer_norms(dest / "onnx-fp32+pruned-L1" / "model.onnx") == 3


def test_a_variant_that_fails_its_task_gate_is_not_written(tiny_models, tmp_path):
    report = build(
        BuildConfig(
            model_dir=str(tiny_models["embedding"]),
            task="embedding",
            model_name="tiny-embedding",
            out_dir=str(tmp_path / "out"),
            targets=["onnx-fp32"],
            eval_limit=120,
            calibration_limit=40,
            prune="layers=1,steps=5,budget=30",
            thresholds={"relevant_recall10_ratio_point": 50.0},
        )
    )
    (t,) = report.targets
    assert not t.passed and "relevant_recall10_ratio_point" in t.reason
    assert t.target == "onnx-fp32+pruned-L1"
    assert not (tmp_path / "out" / "onnx-fp32+pruned-L1").exists()
    assert [p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")] == []


@pytest.mark.parametrize(
    ("prune", "message"),
    [("layers=2", "has 2 layers"), ("layers=x", "layers=K"), ("depth=1", "layers=K")],
)
def test_bad_prune_requests_fail_before_any_work(tiny_models, tmp_path, prune, message):
    with pytest.raises(InputError, match=message):
        build(
            BuildConfig(
                model_dir=str(tiny_models["embedding"]),
                task="embedding",
                model_name="tiny-embedding",
                out_dir=str(tmp_path / "out"),
                targets=["onnx-fp32"],
                prune=prune,
            )
        )


def test_fidelity_thresholds_do_not_apply_to_a_variant(tiny_models, tmp_path):
    with pytest.raises(InputError, match="unknown threshold 'cosine_min'"):
        build(
            BuildConfig(
                model_dir=str(tiny_models["embedding"]),
                task="embedding",
                model_name="tiny-embedding",
                out_dir=str(tmp_path / "out"),
                prune="layers=1",
                thresholds={"cosine_min": 0.9},
            )
        )


def test_inspect_shows_the_variant_and_its_teacher_relative_gate(tiny_pruned_build):
    dest, _ = tiny_pruned_build
    bundle = str(dest / "onnx-int8+pruned-L1")
    r = artifact("inspect", bundle, env={"COLUMNS": "250", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    out = " ".join(r.stdout.split())
    assert "onnx-int8+pruned-L1" in out
    assert "pruned-L1 · layer-drop+distill · kept layers" in out
    assert "task quality relative to the torch-fp32 teacher" in out
    assert "relevant_recall10_ratio" in out
    r = artifact("inspect", bundle, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["target"]["variant"] == read_manifest(bundle).target.variant


@pytest.mark.parametrize(
    ("task", "open_gate"),
    [("rerank", {"spearman": -1.0}), ("classify", {"label_agreement": 0.0})],
)
def test_cross_encoders_and_classifiers_are_pruned_on_their_logits(
    tiny_models, tmp_path, task, open_gate
):
    """The logits path: the head stays, the encoder loses a layer, the student is distilled on
    MSE of the logits and gated on teacher-relative Spearman / label agreement."""
    report = build(
        BuildConfig(
            model_dir=str(tiny_models[task]),
            task=task,
            model_name=f"tiny-{task}",
            out_dir=str(tmp_path / "out"),
            targets=["onnx-fp32"],
            eval_limit=120,
            calibration_limit=40,
            prune="layers=1,steps=20,budget=60",
            thresholds=open_gate,
        )
    )
    (t,) = report.targets
    assert t.passed, t.reason
    m = read_manifest(tmp_path / "out" / "onnx-fp32+pruned-L1")
    assert m.quality.basis == "task" and set(open_gate) <= set(m.quality.thresholds)
    assert m.compression is not None and m.compression.steps == 20
    assert m.compression.loss_end < m.compression.loss_start
    assert layer_norms(tmp_path / "out" / "onnx-fp32+pruned-L1" / "model.onnx") == 3
