"""The GPU extras' pins, checked without a GPU.

``python -m tools.gpu_pins check`` (offline, part of ``make test``): the rules below, on
``pyproject.toml``'s extras and on the committed locks ``requirements/gpu-edge.txt`` and
``requirements/gpu-builder.txt``.
``python -m tools.gpu_pins lock`` (``make gpu-lock``, needs PyPI): re-resolve both locks with uv
for Linux x86_64 / CPython 3.11 (``--python-platform``: no GPU, no CUDA, no NVIDIA index needed;
``tensorrt-cu13-libs`` is a wheel stub whose metadata ``[tool.uv.dependency-metadata]`` gives).
``python -m tools.gpu_pins resolve``: the same resolution into a temporary file, compared with
the committed locks (what the slow suite runs).

What this proves: the extras resolve together on that platform, the locks match the pins, and
the rules hold. What it does not: that the wheels load on a GPU, or what pypi.nvidia.com's real
``tensorrt-cu13-libs`` wheel requires (its CUDA libraries come with it at install time).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
LOCKS = {"gpu-edge": "requirements/gpu-edge.txt", "gpu-builder": "requirements/gpu-builder.txt"}
PLATFORM = ("--python-version", "3.11", "--python-platform", "x86_64-manylinux_2_28")
NEVER_ON_EDGE = ("torch", "transformers", "optimum", "optimum-onnx", "nvidia-modelopt")
MODELOPT_CALIBRATION_FIX = Version("0.42.0")  # calib_utils `[{}] * n_itr` fixed here
ENVIRONMENTS = ("edge", "gpu-edge", "builder", "gpu-builder", "central", "all")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def extras(pyproject: Path = ROOT / "pyproject.toml") -> dict[str, list[Requirement]]:
    data = tomllib.loads(pyproject.read_text())
    return {
        k: [Requirement(r) for r in v] for k, v in data["project"]["optional-dependencies"].items()
    }


def closure(name: str, table: dict[str, list[Requirement]]) -> dict[str, Requirement]:
    """An extra's direct requirements with ``shipyard[...]`` self-references expanded."""
    out: dict[str, Requirement] = {}
    for req in table[name]:
        if _norm(req.name) == "shipyard":
            for sub in sorted(req.extras):
                out |= closure(sub, table)
        else:
            out[_norm(req.name)] = req
    return out


def pinned(req: Requirement) -> str | None:
    spec = [s for s in req.specifier if s.operator == "=="]
    return spec[0].version if spec else None


def read_lock(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[_norm(name)] = version.split(";")[0].strip()
    return pins


def _trt(reqs: dict[str, str]) -> dict[str, str]:
    return {n: v for n, v in reqs.items() if n.startswith("tensorrt-")}


def problems(root: Path = ROOT) -> list[str]:
    """Every rule broken, as one line each (empty: all hold)."""
    table = extras(root / "pyproject.toml")
    found: list[str] = []
    for env in ENVIRONMENTS:
        direct = closure(env, table)
        if "onnxruntime" in direct and "onnxruntime-gpu" in direct:
            found.append(f"[{env}] pins both onnxruntime and onnxruntime-gpu")
    locks = {env: read_lock(root / path) for env, path in LOCKS.items()}
    for env, lock in locks.items():
        if "onnxruntime" in lock and "onnxruntime-gpu" in lock:
            found.append(f"{LOCKS[env]} resolves both onnxruntime and onnxruntime-gpu")
        for name, req in closure(env, table).items():
            want = pinned(req)
            if want is None:
                found.append(f"[{env}] {req} is not pinned exactly")
            elif lock.get(name) != want:
                found.append(f"{LOCKS[env]} has {name}=={lock.get(name)}, [{env}] pins {want}")
    edge_lock = locks["gpu-edge"]
    found += [
        f"{LOCKS['gpu-edge']} pulls {n} onto edge nodes" for n in NEVER_ON_EDGE if n in edge_lock
    ]
    trt_edge, trt_builder = _trt(edge_lock), _trt(locks["gpu-builder"])
    if not trt_edge or trt_edge != trt_builder:
        found.append(f"TensorRT differs between gpu-edge {trt_edge} and gpu-builder {trt_builder}")
    for env, lock in locks.items():
        flavours = {re.search(r"-cu(\d+)", n).group(1) for n in _trt(lock) if "-cu" in n}  # type: ignore[union-attr]
        cuda_python = lock.get("cuda-python", "")
        if len(flavours) != 1 or not cuda_python.startswith(f"{next(iter(flavours), '?')}."):
            found.append(
                f"{LOCKS[env]}: TensorRT CUDA flavours {flavours} vs cuda-python {cuda_python}"
            )
    modelopt = locks["gpu-builder"].get("nvidia-modelopt")
    if modelopt is None or Version(modelopt) < MODELOPT_CALIBRATION_FIX:
        found.append(
            f"nvidia-modelopt {modelopt} predates the calibration fix ({MODELOPT_CALIBRATION_FIX})"
        )
    return found


def compile_lock(env: str, out: Path, root: Path = ROOT, constraints: Path | None = None) -> None:
    uv = Path(sys.executable).parent / "uv"
    cmd = [str(uv), "pip", "compile", "pyproject.toml", "--extra", env, *PLATFORM]
    if constraints is not None:
        cmd += ["--constraint", str(constraints)]
    subprocess.run([*cmd, "--no-header", "--quiet", "-o", str(out)], cwd=root, check=True)


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "check"
    if command == "lock":
        for env, path in LOCKS.items():
            compile_lock(env, ROOT / path)
            print(f"wrote {path}")
    elif command == "resolve":
        # the committed pins must still resolve together from the index (a yanked release or a
        # pyproject change breaks them); newer releases since the lock are news, not a failure
        with tempfile.TemporaryDirectory() as tmp:
            for env, path in LOCKS.items():
                pinned, fresh = Path(tmp) / f"{env}-pinned.txt", Path(tmp) / f"{env}.txt"
                compile_lock(env, pinned, constraints=ROOT / path)
                if read_lock(pinned) != read_lock(ROOT / path):
                    print(f"{path} no longer resolves to its own pins: run `make gpu-lock`")
                    return 1
                compile_lock(env, fresh)
                committed, newest = read_lock(ROOT / path), read_lock(fresh)
                newer = sorted(
                    f"{n} {v} -> {newest[n]}" for n, v in committed.items() if newest.get(n, v) != v
                )
                if newer:
                    print(
                        f"{path}: newer on the index ({', '.join(newer)}); `make gpu-lock` takes them"
                    )
        print("both GPU locks re-resolve to the committed pins")
    elif command != "check":
        print("usage: python -m tools.gpu_pins [check|lock|resolve]")
        return 2
    found = problems()
    for line in found:
        print(line)
    if not found:
        print("GPU pins: consistent")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
