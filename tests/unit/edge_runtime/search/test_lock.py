"""The version lock beyond the version number: source weights and, per target, the bundle."""

import msgspec
import pytest

from artifacts.manifest import IndexModel
from edge_runtime.search.service import lock_mismatch
from tests.factories import make_manifest

SRC = "sha256:" + "0" * 64  # make_manifest's source digest
BUNDLE = "sha256:" + "b" * 64


def lock(**kw) -> IndexModel:
    base = {
        "name": "product-embedder",
        "version": 1,
        "target": "onnx-int8",
        "manifest_digest": BUNDLE,
        "source_digest": SRC,
    }
    return IndexModel(**{**base, **kw})


@pytest.mark.parametrize(
    ("index", "target", "digest", "why"),
    [
        (lock(), "onnx-int8", BUNDLE, None),  # the bundle that embedded the catalog
        (lock(), "openvino-int8", "sha256:" + "c" * 64, None),  # another target, same weights
        (lock(source_digest=""), "onnx-int8", BUNDLE, None),  # an older index: version only
        (lock(manifest_digest=""), "onnx-int8", "sha256:" + "d" * 64, None),
        (lock(source_digest="sha256:" + "9" * 64), "onnx-int8", BUNDLE, "source weights differ"),
        (lock(), "onnx-int8", "sha256:" + "d" * 64, "manifest digests differ"),
    ],
)
def test_lock_mismatch(index, target, digest, why):
    model = make_manifest(target)
    found = lock_mismatch(index, model, digest)
    if why is None:
        assert found is None
    else:
        assert found is not None and why in found and "rebuild the index" in found


def test_a_rebuilt_registrys_v1_is_not_the_indexed_v1():
    other = make_manifest("onnx-int8")
    other = msgspec.structs.replace(
        other, model=msgspec.structs.replace(other.model, source_digest="sha256:" + "7" * 64)
    )
    assert "different build of product-embedder v1" in lock_mismatch(lock(), other, BUNDLE)
