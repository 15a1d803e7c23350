"""Bad build input: a clear error before any expensive work, nothing partial left behind."""

import json

import pytest

from artifacts.errors import BundleExistsError, InputError, KeyFileError
from builder.data.datasets import calibration_items, eval_set, read_jsonl
from builder.errors import DatasetError, ModelDirError
from builder.pipeline import BuildConfig, build
from builder.source import inspect_model_dir


def cfg(tmp_path, model_dir, **kw):
    base = {
        "model_dir": str(model_dir),
        "task": "embedding",
        "model_name": "m",
        "out_dir": str(tmp_path / "out"),
    }
    base.update(kw)
    return BuildConfig(**base)


def test_missing_model_dir(tmp_path):
    with pytest.raises(ModelDirError, match="does not exist"):
        build(cfg(tmp_path, tmp_path / "nope"))


def test_not_a_model_dir(tmp_path):
    (tmp_path / "m").mkdir()
    with pytest.raises(ModelDirError, match="no config.json"):
        inspect_model_dir(tmp_path / "m")


def test_unsupported_architecture(tmp_path):
    d = tmp_path / "gpt"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ModelDirError, match="'gpt2' is not supported"):
        inspect_model_dir(d)


def test_missing_weights_and_tokenizer(tmp_path):
    d = tmp_path / "bert"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelDirError, match="no weights"):
        inspect_model_dir(d)
    (d / "model.safetensors").write_bytes(b"x")
    with pytest.raises(ModelDirError, match="no tokenizer"):
        inspect_model_dir(d)


def test_unknown_task_target_name_key(tmp_path, tiny_models):
    m = tiny_models["embedding"]
    with pytest.raises(InputError, match="unknown task"):
        build(cfg(tmp_path, m, task="summarize"))
    with pytest.raises(InputError, match="unknown target 'tensorrt-fp64'"):
        build(cfg(tmp_path, m, targets=["tensorrt-fp64"]))
    with pytest.raises(InputError, match="invalid model name"):
        build(cfg(tmp_path, m, model_name="../evil"))
    with pytest.raises(KeyFileError):
        build(cfg(tmp_path, m, key_file=str(tmp_path / "missing.key")))
    with pytest.raises(InputError, match="unknown threshold"):
        build(cfg(tmp_path, m, thresholds={"nonsense": 1.0}))


def test_unwritable_output_dir(tmp_path, tiny_models):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="not writable"):
        build(cfg(tmp_path, tiny_models["embedding"], out_dir=str(blocker / "sub")))


def test_existing_bundle_refused_without_overwrite(tmp_path, tiny_models):
    (tmp_path / "out" / "onnx-fp32").mkdir(parents=True)
    with pytest.raises(BundleExistsError, match="--overwrite"):
        build(cfg(tmp_path, tiny_models["embedding"]))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["onnx-fp32"]


def test_empty_and_malformed_jsonl(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(DatasetError, match="empty calibration"):
        calibration_items("embedding", empty)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": \n')
    with pytest.raises(DatasetError, match=r"bad.jsonl:2: not valid JSON"):
        read_jsonl(bad)
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text('{"text": "ok"}\n{"text": 5}\n')
    with pytest.raises(DatasetError, match=r":2: 'text' must be a string"):
        read_jsonl(wrong)
    half = tmp_path / "half.jsonl"
    half.write_text('{"query": "q"}\n')
    with pytest.raises(DatasetError, match=r":1: needs"):
        read_jsonl(half)
    arr = tmp_path / "arr.jsonl"
    arr.write_text("[1, 2]\n")
    with pytest.raises(DatasetError, match="expected a JSON object"):
        read_jsonl(arr)
    with pytest.raises(DatasetError, match="cannot read"):
        read_jsonl(tmp_path / "missing.jsonl")


def test_rerank_eval_needs_groups(tmp_path):
    f = tmp_path / "ev.jsonl"
    f.write_text('{"query": "q1", "product": "p1"}\n{"query": "q2", "product": "p2"}\n')
    with pytest.raises(DatasetError, match=">= 2 products"):
        eval_set("rerank", f)


def test_shipped_sets_have_the_length_mix():
    cal = calibration_items("embedding", None, limit=300)
    assert len(cal) == 300
    lengths = sorted(len(t.split()) for t in cal)
    assert lengths[0] <= 4 and lengths[-1] >= 60  # queries and long descriptions
    ev = eval_set("embedding", None)
    assert len(ev.queries) == 360 and len(ev.products) >= 1500
    assert set(ev.queries).isdisjoint(set(calibration_items("embedding", None, limit=10_000)))
    pairs = calibration_items("rerank", None, limit=50)
    assert all(isinstance(p, tuple) for p in pairs)
