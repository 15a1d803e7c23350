"""The edge's bundle cache: what a crash leaves behind is swept at start, and only then."""

from __future__ import annotations

from edge_runtime.sync import BundleCache


def test_leftovers_of_an_interrupted_placement_are_swept_at_start(tmp_path):
    cache = BundleCache(tmp_path)
    v2 = tmp_path / "models" / "m" / "v2"
    (v2 / "onnx-int8").mkdir(parents=True)
    (v2 / "onnx-int8" / "model.onnx").write_bytes(b"placed")
    staged = v2 / ".onnx-fp32.abc123.partial"
    (staged / "sub").mkdir(parents=True)
    (staged / "sub" / "half.bin").write_bytes(b"x" * 10)
    swapped = v2 / ".onnx-int8.def456.old"
    swapped.mkdir()
    tmp_state = tmp_path / "models" / "m" / ".state.json.zz.tmp"
    tmp_state.write_bytes(b"{")
    keep = v2 / "notes.partial"  # not one of ours (no leading dot): left alone
    keep.mkdir()
    assert cache.swept == []  # nothing at the first start
    again = BundleCache(tmp_path)
    assert sorted(again.swept) == sorted([staged, swapped, tmp_state])
    assert not staged.exists() and not swapped.exists() and not tmp_state.exists()
    assert (v2 / "onnx-int8" / "model.onnx").read_bytes() == b"placed" and keep.exists()
    assert again.versions("m") == [2]


def test_clearing_a_models_downloads_removes_its_files_only(tmp_path):
    cache = BundleCache(tmp_path)
    mine, other = tmp_path / "downloads" / "m", tmp_path / "downloads" / "other"
    for d in (mine, other):
        d.mkdir(parents=True)
        (d / "abc.part").write_bytes(b"x" * 100)
        (d / "def").write_bytes(b"y")
    assert cache.clear_downloads("m") == 2 and not any(mine.iterdir())
    assert len(list(other.iterdir())) == 2
    assert cache.clear_downloads("never-downloaded") == 0
