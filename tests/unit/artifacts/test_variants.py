"""Model variants: bundle keys, the --prune spec, and selection that never takes a variant
unless the policy names it (or the version carries nothing else)."""

from __future__ import annotations

import pytest

from artifacts.errors import InputError, ManifestError
from artifacts.manifest import decode, encode
from artifacts.targets import SelectionPolicy, is_bundle_key, rank_bundles, target_spec
from artifacts.variants import (
    PruneSpec,
    bundle_key,
    family,
    parse_prune,
    policy_names,
    split_key,
)
from tests.factories import cpu_node, make_manifest

CPU = ("onnx-fp32", "onnx-int8", "openvino-int8")


def version(*variants: str):
    """Every CPU target of the full model and of each variant."""
    return [make_manifest(t, variant=v) for v in ("", *variants) for t in CPU]


def test_keys_round_trip():
    assert bundle_key("onnx-int8") == "onnx-int8"
    assert bundle_key("onnx-int8", "pruned-L4") == "onnx-int8+pruned-L4"
    assert split_key("onnx-int8+pruned-L4") == ("onnx-int8", "pruned-L4")
    assert split_key("onnx-int8") == ("onnx-int8", "")
    assert family("pruned-L4") == "pruned"
    assert policy_names("onnx-int8", "pruned-L4") == ("onnx-int8+pruned-L4", "pruned-L4", "pruned")
    assert target_spec("onnx-int8+pruned-L4").backend == "onnxruntime"


@pytest.mark.parametrize(
    "key",
    [
        "onnx-int8+",
        "onnx-int8+../x",
        "onnx-int8+pruned/L4",
        "onnx-int8+PRUNED-L4",
        "onnx-int8+pruned",
        "nope+pruned-L4",
        "onnx-int8+pruned-L4+x",
        "onnx-int8+pruned-L4\n",
        "onnx-fp32+onnx-int8",  # a variant that reads as a target id
        "onnx-int8+pruned-l4",  # case: one directory on a case-insensitive disk
        "onnx-int8+pruned-L0",
        "onnx-int8+pruned-L100",
        "onnx-int8+distilled-L4",
    ],
)
def test_malformed_keys_are_refused(key):
    assert not is_bundle_key(key)


def test_manifest_records_the_variant():
    m = make_manifest("onnx-int8", variant="pruned-L4")
    again = decode(encode(m))
    assert again.target.variant == "pruned-L4" and again.bundle_key() == "onnx-int8+pruned-L4"
    bad = make_manifest("onnx-int8", variant="../etc")
    with pytest.raises(ManifestError):
        bad.bundle_key()


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("layers=4", PruneSpec(4)),
        ("layers=2,steps=50,budget=10", PruneSpec(2, 50, 10.0)),
        (" layers=3 , budget=30", PruneSpec(3, budget_s=30.0)),
        (None, None),
        ("", None),
    ],
)
def test_parse_prune(text, spec):
    assert parse_prune(text) == spec


@pytest.mark.parametrize(
    "text",
    [
        "layers",
        "layers=0",
        "layers=x",
        "heads=2",
        "layers=2,layers=3",
        "steps=10",
        "layers=2,budget=1e9",
        "layers=2,budget=nan",
        "layers=4;rm -rf /",
    ],
)
def test_bad_prune_specs_are_refused(text):
    with pytest.raises(InputError):
        parse_prune(text)


def test_canonical_prune_text():
    spec = parse_prune("layers=4")
    assert spec is not None and spec.as_text() == "layers=4,steps=600,budget=120"
    assert parse_prune(spec.as_text()) == spec
    assert spec.variant == "pruned-L4"


def test_variants_are_not_taken_unless_the_policy_names_them():
    ranking = rank_bundles(cpu_node(), version("pruned-L4"))
    assert [c.target for c in ranking.eligible] == ["onnx-int8", "openvino-int8", "onnx-fp32"]
    reasons = {e.target: e.reason for e in ranking.excluded}
    assert set(reasons) == {f"{t}+pruned-L4" for t in CPU}
    assert "backends.prefer" in reasons["onnx-int8+pruned-L4"]


@pytest.mark.parametrize("name", ["pruned", "pruned-L4", "onnx-int8+pruned-L4"])
def test_prefer_puts_the_variant_first_with_the_full_model_behind(name):
    ranking = rank_bundles(cpu_node(), version("pruned-L4"), SelectionPolicy(prefer=[name]))
    keys = [c.target for c in ranking.eligible]
    assert keys[0] == "onnx-int8+pruned-L4"
    assert ranking.eligible[0].variant == "pruned-L4"
    assert "onnx-int8" in keys  # the full model stays a selectable candidate, ranked behind
    assert keys.index("onnx-int8") > keys.index("onnx-int8+pruned-L4")


def test_allow_a_family_serves_only_that_variant():
    ranking = rank_bundles(cpu_node(), version("pruned-L4"), SelectionPolicy(allow=["pruned"]))
    assert [c.target for c in ranking.eligible] == [
        "onnx-int8+pruned-L4",
        "openvino-int8+pruned-L4",
        "onnx-fp32+pruned-L4",
    ]


def test_allow_a_target_id_does_not_opt_in_its_variant():
    ranking = rank_bundles(cpu_node(), version("pruned-L4"), SelectionPolicy(allow=["onnx-int8"]))
    assert [c.target for c in ranking.eligible] == ["onnx-int8"]


def test_deny_a_target_denies_its_variants_too():
    policy = SelectionPolicy(prefer=["pruned"], deny=["onnx-int8"])
    keys = [c.target for c in rank_bundles(cpu_node(), version("pruned-L4"), policy).eligible]
    assert "onnx-int8" not in keys and "onnx-int8+pruned-L4" not in keys
    policy = SelectionPolicy(deny=["pruned"])
    keys = [c.target for c in rank_bundles(cpu_node(), version("pruned-L4"), policy).eligible]
    assert all("+" not in k for k in keys)


def test_a_version_of_only_variants_is_served_as_is():
    only = [make_manifest(t, variant="pruned-L4") for t in CPU]
    ranking = rank_bundles(cpu_node(), only)
    assert ranking.eligible[0].target == "onnx-int8+pruned-L4"
    # ... unless the node knows the version carries the full model too (signed metadata)
    keys = [m.bundle_key() for m in version("pruned-L4")]
    ranking = rank_bundles(cpu_node(), only, version_keys=keys)
    assert ranking.eligible == []
    # ... or cannot prove what it carries (no signed list): then only the policy opts in
    assert rank_bundles(cpu_node(), only, version_keys=()).eligible == []
    named = rank_bundles(cpu_node(), only, SelectionPolicy(prefer=["pruned"]), version_keys=())
    assert named.eligible[0].target == "onnx-int8+pruned-L4"


def test_two_variants_rank_by_the_policy_order():
    policy = SelectionPolicy(prefer=["pruned-L2", "pruned-L4"])
    ranking = rank_bundles(cpu_node(), version("pruned-L4", "pruned-L2"), policy)
    assert [c.target for c in ranking.eligible][:2] == [
        "onnx-int8+pruned-L2",
        "openvino-int8+pruned-L2",
    ]


def test_a_malformed_variant_is_excluded_not_raised():
    ranking = rank_bundles(cpu_node(), [make_manifest("onnx-int8", variant="x/../y")])
    assert ranking.eligible == [] and "not one Shipyard knows" in ranking.excluded[0].reason


def test_a_manifest_whose_gate_basis_contradicts_its_variant_is_excluded():
    import msgspec

    full = make_manifest("onnx-int8")
    as_task = msgspec.structs.replace(
        full, quality=msgspec.structs.replace(full.quality, basis="task")
    )
    ranking = rank_bundles(cpu_node(), [as_task])
    assert ranking.eligible == [] and "gate basis" in ranking.excluded[0].reason
    variant = make_manifest("onnx-int8", variant="pruned-L4")
    as_fidelity = msgspec.structs.replace(
        variant, quality=msgspec.structs.replace(variant.quality, basis="fidelity")
    )
    ranking = rank_bundles(cpu_node(), [as_fidelity], SelectionPolicy(prefer=["pruned"]))
    assert ranking.eligible == [] and "gate basis" in ranking.excluded[0].reason


@pytest.mark.parametrize("command", ["build", "submit"])
def test_the_cli_refuses_a_bad_prune_before_any_work(tmp_path, command):
    from tests.unit.artifacts.test_cli_local import artifact

    args = ["--task", "embedding", "--model", "m", "--prune", "layers=2;x"]
    if command == "build":
        args += ["--out", str(tmp_path / "o")]
    r = artifact(
        command, str(tmp_path), *args, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    )
    assert r.returncode != 0
    assert "--prune takes layers=K" in r.stderr, r.stderr
    assert not (tmp_path / "o").exists()
