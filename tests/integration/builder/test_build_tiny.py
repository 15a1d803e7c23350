"""Real builds of tiny random BERTs: every task x every CPU target, verified end to end."""

import json
import subprocess
import sys

import numpy as np
import pytest

from artifacts.bundle import read_manifest, verify_bundle
from artifacts.golden import read_golden
from artifacts.openvino_config import cpu_has_native_bf16
from artifacts.signing import TrustedKeys
from artifacts.textproc import TextEncoder, compare, run_items
from builder.runners import bundle_runner
from tests.factories import TINY_THRESHOLDS

TASKS = ("embedding", "rerank", "classify")
TARGETS = ("onnx-fp32", "onnx-int8", "openvino-int8")


def artifact_cli(*args):
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from artifacts.cli import main; sys.exit(main())",
            *args,
        ],
        capture_output=True,
        text=True,
    )


def runner_for(bundle, manifest):
    return bundle_runner(bundle, manifest, threads=1)


@pytest.mark.parametrize("task", TASKS)
def test_every_target_built_and_passed(tiny_builds, task):
    dest, report = tiny_builds[task]
    assert report.ok, [(t.target, t.reason) for t in report.targets]
    assert [t.target for t in report.targets] == list(TARGETS)
    for t in report.targets:
        assert (dest / t.target / "manifest.json").is_file()


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("target", TARGETS)
def test_bundle_verifies_with_cli(tiny_builds, publisher_keys, task, target):
    dest, _ = tiny_builds[task]
    r = artifact_cli(
        "verify", str(dest / target), "--trusted-key", str(publisher_keys[1]), "--json"
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["target"] == target


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("target", TARGETS)
def test_golden_outputs_reproduce_through_the_full_path(tiny_builds, publisher_keys, task, target):
    dest, _ = tiny_builds[task]
    bundle = dest / target
    v = verify_bundle(bundle, TrustedKeys.from_paths([publisher_keys[1]]))
    m = v.manifest
    golden = read_golden(bundle / m.golden.file)
    assert len(golden.items) == m.golden.items >= 16
    encoder = TextEncoder.for_bundle(bundle, m)
    runner = runner_for(bundle, m)
    out = run_items(
        encoder, golden.items, runner, runner.input_names, pad_id=m.tokenizer.pad_token_id
    )
    worst, _ = compare(golden.reference, out, m.golden.metric)
    if m.golden.metric == "cosine":
        assert worst >= m.golden.tolerance
    else:
        assert worst <= m.golden.tolerance
    # a wrong tokenizer setting must fail the same check
    if task == "embedding":
        short = TextEncoder(bundle / m.tokenizer.file, type(m.tokenizer)(max_length=4))
        bad = run_items(short, golden.items, runner, runner.input_names)
        assert compare(golden.reference, bad, "cosine")[0] < m.golden.tolerance


@pytest.mark.parametrize("task", TASKS)
def test_manifest_records_quality_perf_build(tiny_builds, task):
    dest, _ = tiny_builds[task]
    for target in TARGETS:
        m = read_manifest(dest / target)
        assert (
            m.model.task == task
            and m.model.version == 0
            and m.model.source_digest.startswith("sha256:")
        )
        q = m.quality
        assert q.passed and q.config and q.attempts and q.attempts[-1].passed
        assert set(q.thresholds) <= set(q.metrics)
        assert q.eval_set_digest.startswith("sha256:") and q.eval_items > 0
        assert (
            m.perf.latency_p50_ms > 0 and m.perf.throughput_items_s > 0 and m.perf.host.threads > 0
        )
        assert {"onnxruntime", "torch", "transformers", "openvino"} <= set(m.build.toolchain)
        assert m.build.calibration_set_digest.startswith("sha256:")
        assert m.tokenizer.max_length == 128 and m.tokenizer.pair == (task == "rerank")
        assert m.signing_key_id
        if target == "openvino-int8":
            assert m.target.runtime["inference_precision"] == "f32"
            # gated in BF16 too where this host runs it natively, and only there
            assert ("bf16_gated" in m.target.runtime) == cpu_has_native_bf16()
        if task == "classify":
            assert m.model.labels == ["category-0", "category-1", "category-2"] and m.io.dim == 3
        if task == "embedding":
            assert m.io.pooling == "mean" and m.io.normalize and m.io.dim == 32
    assert read_manifest(dest / "onnx-int8").target.requires.cpu_isa_any


@pytest.mark.parametrize("task", TASKS)
def test_a_node_runs_bf16_only_where_it_was_gated_and_runs_natively(
    tiny_builds, publisher_keys, task
):
    from artifacts.bundle import verify_bundle
    from artifacts.signing import TrustedKeys
    from edge_runtime.backends import BackendSettings
    from edge_runtime.loaded_model import check, open_model

    dest, _ = tiny_builds[task]
    bundle = verify_bundle(dest / "openvino-int8", TrustedKeys.from_paths([publisher_keys[1]]))
    model = open_model(bundle, BackendSettings(threads=2))
    gated = bundle.manifest.target.runtime.get("bf16_gated") == "true"
    want = "bf16" if gated and cpu_has_native_bf16() else "f32"
    assert model.info["inference_precision"] == want
    assert check(model).passed  # the golden smoke check holds in the numerics the node runs
    model.close()


def test_bf16_is_gated_on_a_host_that_runs_it(tiny_builds):
    """Where the build host runs BF16 natively the gate's verdict on it is recorded for every
    task (here: the random tiny embedder's cosines fail it in BF16; the others pass)."""
    if not cpu_has_native_bf16():
        pytest.skip("this CPU has no native BF16: the builder records no BF16 verdict")
    flags = {
        task: read_manifest(dest / "openvino-int8").target.runtime["bf16_gated"]
        for task, (dest, _) in tiny_builds.items()
    }
    assert set(flags.values()) <= {"true", "false"} and "true" in flags.values(), flags


def test_no_bf16_claim_when_the_operator_turns_it_off(tiny_models, publisher_keys, tmp_path):
    """``--no-bf16`` (a fleet whose verifiers lack native BF16): no claim, nodes run f32."""
    from builder.pipeline import BuildConfig, build
    from tests.factories import TINY_THRESHOLDS

    report = build(
        BuildConfig(
            model_dir=str(tiny_models["classify"]),
            task="classify",
            model_name="tiny-classify",
            out_dir=str(tmp_path),
            targets=["openvino-int8"],
            key_file=str(publisher_keys[0]),
            eval_limit=120,
            calibration_limit=40,
            thresholds=TINY_THRESHOLDS["classify"],
            bf16=False,
        )
    )
    assert report.targets[0].passed, report.targets[0].reason
    assert "bf16_gated" not in read_manifest(tmp_path / "openvino-int8").target.runtime


@pytest.mark.parametrize("task", TASKS)
def test_int8_bundles_are_smaller(tiny_builds, task):
    _, report = tiny_builds[task]
    sizes = {t.target: t.size_bytes for t in report.targets}
    assert sizes["onnx-int8"] < 0.45 * sizes["onnx-fp32"]
    assert sizes["openvino-int8"] < 0.45 * sizes["onnx-fp32"]


def test_embedding_outputs_are_normalised(tiny_builds):
    dest, _ = tiny_builds["embedding"]
    m = read_manifest(dest / "onnx-int8")
    golden = read_golden(dest / "onnx-int8" / "golden.npz")
    np.testing.assert_allclose(np.linalg.norm(golden.reference, axis=1), 1.0, rtol=1e-4)
    assert golden.reference.shape[1] == m.io.dim


def test_impossible_threshold_fails_target_and_writes_nothing(tiny_models, tmp_path):
    out = tmp_path / "out"
    r = artifact_cli(
        "build",
        str(tiny_models["classify"]),
        "--task",
        "classify",
        "--model",
        "tiny",
        "--out",
        str(out),
        "--targets",
        "onnx-fp32,onnx-int8",
        "--threshold",
        "label_agreement=1.5",
    )
    assert r.returncode == 1, r.stderr  # failed (2 is reserved for usage errors)
    flat = " ".join(line.strip("│ ") for line in r.stdout.splitlines())
    assert "label_agreement 1.0000 (95% CI 1.0000–1.0000) < 1.5" in " ".join(flat.split()), flat
    assert "target(s) failed: onnx-fp32, onnx-int8" in r.stderr
    assert sorted(p.name for p in out.iterdir()) == []


def test_user_jsonl_calibration_and_eval(tiny_models, tmp_path):
    from builder.pipeline import BuildConfig, build

    cal = tmp_path / "cal.jsonl"
    cal.write_text(
        "\n".join(json.dumps({"text": f"blue running shoe size {i}"}) for i in range(30))
    )
    ev = tmp_path / "eval.jsonl"
    ev.write_text(
        "\n".join(
            json.dumps(
                {
                    "query": f"trail shoe {i // 2}",
                    "product": f"Nike trail shoe model {i}",
                    "slice": "short" if i < 20 else "long",
                }
            )
            for i in range(80)
        )
    )
    report = build(
        BuildConfig(
            model_dir=str(tiny_models["embedding"]),
            task="embedding",
            model_name="tiny",
            out_dir=str(tmp_path / "out"),
            targets=["onnx-int8"],
            calibration_file=str(cal),
            eval_file=str(ev),
            thresholds=TINY_THRESHOLDS["embedding"],
        )
    )
    assert report.ok, report.targets[0].reason
    m = read_manifest(tmp_path / "out" / "onnx-int8")
    user, *generated = m.quality.splits
    # the file decides: 40 queries (each with its 2 relevant products) + 80 products
    assert (user.name, user.role, user.items) == ("user", "deciding", 120)
    assert user.composition == {
        "query:short": 10,
        "query:long": 30,
        "product:short": 20,
        "product:long": 60,
    }
    assert "relevant_recall10" in user.metrics and "query:short" in user.slices
    assert [s.role for s in generated] == ["advisory", "advisory"]
    assert m.quality.intervals["recall10_overlap"] == user.intervals["recall10_overlap"]
    assert "cal.jsonl" not in m.quality.eval_set_digest  # a digest, not a path
