"""The GPU extras' rules (tools/gpu_pins.py) on the committed pins, and each rule catching the
packaging mistake it exists for, on edited copies of pyproject.toml and the locks."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from tools import gpu_pins

ROOT = gpu_pins.ROOT


@pytest.fixture
def copy(tmp_path) -> Path:
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(ROOT / "requirements", tmp_path / "requirements")
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new))


def test_committed_pins_are_consistent():
    assert gpu_pins.problems() == []


def test_extras_expand_self_references():
    table = gpu_pins.extras()
    edge = gpu_pins.closure("gpu-edge", table)
    assert "onnxruntime-gpu" in edge and "litestar" in edge and "onnxruntime" not in edge
    assert not set(gpu_pins.NEVER_ON_EDGE) & set(edge)
    assert "torch" in gpu_pins.closure("gpu-builder", table)


def test_both_onnxruntimes_in_one_extra_are_caught(copy):
    edit(
        copy / "pyproject.toml",
        '"onnxruntime-gpu==1.31.1",',
        '"onnxruntime-gpu==1.31.1", "onnxruntime==1.32.0",',
    )
    assert any(
        "[gpu-edge] pins both onnxruntime and onnxruntime-gpu" in p for p in gpu_pins.problems(copy)
    )


def test_both_onnxruntimes_in_a_lock_are_caught(copy):
    edit(
        copy / "requirements/gpu-builder.txt",
        "onnxruntime-gpu==1.24.4",
        "onnxruntime==1.32.0\nonnxruntime-gpu==1.24.4",
    )
    assert (
        "requirements/gpu-builder.txt resolves both onnxruntime and onnxruntime-gpu"
        in gpu_pins.problems(copy)
    )


def test_torch_on_an_edge_node_is_caught(copy):
    lock = copy / "requirements/gpu-edge.txt"
    lock.write_text(lock.read_text() + "torch==2.13.0\n")
    assert "requirements/gpu-edge.txt pulls torch onto edge nodes" in gpu_pins.problems(copy)


def test_stale_lock_is_caught(copy):
    edit(copy / "pyproject.toml", '"onnxruntime-gpu==1.31.1"', '"onnxruntime-gpu==1.31.0"')
    assert any(
        "has onnxruntime-gpu==1.31.1, [gpu-edge] pins 1.31.0" in p for p in gpu_pins.problems(copy)
    )


def test_unpinned_requirement_is_caught(copy):
    edit(
        copy / "pyproject.toml",
        '"nvidia-ml-py==13.615.71",\n]\n# What every',
        '"nvidia-ml-py>=12",\n]\n# What every',
    )
    assert any(
        "[gpu-edge] nvidia-ml-py>=12 is not pinned exactly" in p for p in gpu_pins.problems(copy)
    )


def test_different_tensorrt_on_builder_and_edge_is_caught(copy):
    edit(
        copy / "requirements/gpu-edge.txt",
        "tensorrt-cu13-libs==11.4.0.106",
        "tensorrt-cu13-libs==11.3.0.1",
    )
    assert any(p.startswith("TensorRT differs between gpu-edge") for p in gpu_pins.problems(copy))


def test_cuda_flavour_mismatch_is_caught(copy):
    edit(copy / "requirements/gpu-edge.txt", "cuda-python==13.4.4", "cuda-python==12.9.10")
    assert any(
        "TensorRT CUDA flavours {'13'} vs cuda-python 12.9.10" in p for p in gpu_pins.problems(copy)
    )


def test_modelopt_without_the_calibration_fix_is_caught(copy):
    edit(
        copy / "requirements/gpu-builder.txt", "nvidia-modelopt==0.47.0", "nvidia-modelopt==0.33.1"
    )
    assert any(
        "nvidia-modelopt 0.33.1 predates the calibration fix" in p for p in gpu_pins.problems(copy)
    )


def test_read_lock_ignores_comments_and_markers(tmp_path):
    lock = tmp_path / "l.txt"
    lock.write_text("# header\nFoo_Bar==1.2 ; sys_platform == 'linux'\n    # via x\nbaz==3\n")
    assert gpu_pins.read_lock(lock) == {"foo-bar": "1.2", "baz": "3"}


def _pypi_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
        return True
    except OSError:
        return False


@pytest.mark.slow
def test_locks_re_resolve_from_pypi():
    if not _pypi_reachable():
        pytest.skip(
            "pypi.org is not reachable from this machine: the committed locks were checked offline only"
        )
    assert gpu_pins.main(["resolve"]) == 0


def test_gpu_check_refuses_here_with_the_reason(capsys):
    from tools import gpu_check

    why = gpu_check.missing()
    if not why:
        pytest.skip("this machine has an NVIDIA GPU and the gpu-builder stack: run make gpu-check")
    assert gpu_check.main() == 2
    out = capsys.readouterr().out
    assert out.startswith("gpu-check refused on this machine:") and why[0] in out
