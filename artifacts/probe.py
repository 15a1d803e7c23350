"""Probe what this node can run: CPU ISA, memory, NVIDIA GPUs, TensorRT, onnxruntime, OpenVINO.

Each probe's failure is caught and recorded in ``probe_errors``; probing never fails. Runtime
libraries are imported only here and only if present.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import socket
import subprocess
from pathlib import Path

from artifacts.targets import GpuInfo, NodeCapabilities

RELEVANT_ISA = {
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "asimd",
    "asimddp",
    "asimdhp",
    "sve",
    "sve2",
    "i8mm",
    "bf16",
}


def cpu_arch() -> str:
    m = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(m, m)


def _cpu(caps: NodeCapabilities) -> None:
    text = Path("/proc/cpuinfo").read_text()
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("flags", "Features"):
            flags |= set(value.split())
        elif key in ("model name", "Processor", "CPU part") and not caps.cpu_model:
            caps.cpu_model = value.strip()
    caps.cpu_isa = sorted(flags & RELEVANT_ISA)


def host_cpu_isa() -> list[str]:
    """The Shipyard-relevant instruction-set flags of this host (empty where unreadable)."""
    caps = NodeCapabilities()
    try:
        _cpu(caps)
    except OSError:
        return []
    return caps.cpu_isa


def _memory_mb() -> int:
    total = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            total = int(line.split()[1]) // 1024
    try:  # a cgroup v2 limit is the real ceiling in a container
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            total = min(total, int(limit) // (1 << 20))
    except (OSError, ValueError):
        pass
    return total


def _gpus(caps: NodeCapabilities) -> None:
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
        driver = pynvml.nvmlSystemGetDriverVersion()
        caps.cuda_driver = driver.decode() if isinstance(driver, bytes) else str(driver)
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle).total // (1 << 20)
            caps.gpus.append(
                GpuInfo(
                    name=name.decode() if isinstance(name, bytes) else str(name),
                    compute_capability=f"{major}.{minor}",
                    memory_mb=int(mem),
                    index=i,
                )
            )
        return
    except ImportError:
        pass
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return  # no NVIDIA GPU: not an error
    out = subprocess.run(
        [
            exe,
            "--query-gpu=index,name,compute_cap,memory.total,driver_version",
            "--format=csv,noheader,nounits",
        ],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout
    for line in out.strip().splitlines():
        idx, name, cc, mem, driver = (p.strip() for p in line.split(","))
        caps.gpus.append(
            GpuInfo(name=name, compute_capability=cc, memory_mb=int(float(mem)), index=int(idx))
        )
        caps.cuda_driver = driver


def _tensorrt() -> str | None:
    # the metapackages, or the wheels the gpu-edge/gpu-builder locks install directly
    for dist in (
        "tensorrt",
        "tensorrt-cu13",
        "tensorrt-cu12",
        "tensorrt-cu13-bindings",
        "tensorrt-cu12-bindings",
        "tensorrt_lean",
        "tensorrt-lean-cu13-bindings",
    ):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _onnxruntime(caps: NodeCapabilities) -> None:
    import onnxruntime as ort

    caps.onnxruntime = ort.__version__
    caps.onnxruntime_providers = list(ort.get_available_providers())


def _openvino(caps: NodeCapabilities, full: bool) -> None:
    if not full:
        # Without importing OpenVINO (~30 MB resident): its CPU plugin always ships; an Intel
        # GPU shows up as a DRM render node. ``full`` asks OpenVINO itself.
        caps.openvino = importlib.metadata.version("openvino")
        caps.openvino_devices = ["CPU"] + (
            ["GPU"] if list(Path("/dev/dri").glob("renderD*")) else []
        )
        return
    import openvino as ov

    caps.openvino = ov.get_version().split("-")[0]
    caps.openvino_devices = list(ov.Core().available_devices)


def probe_node(*, full: bool = True) -> NodeCapabilities:
    """``full=False`` skips importing OpenVINO (the edge, where memory counts)."""
    caps = NodeCapabilities(
        hostname=socket.gethostname(),
        arch=cpu_arch(),
        os=platform.system().lower(),
        cpu_cores=os.cpu_count() or 1,
    )
    steps = {
        "cpu": lambda: _cpu(caps),
        "memory": lambda: setattr(caps, "memory_mb", _memory_mb()),
        "gpu": lambda: _gpus(caps),
        "tensorrt": lambda: setattr(caps, "tensorrt", _tensorrt()),
        "onnxruntime": lambda: _onnxruntime(caps),
        "openvino": lambda: _openvino(caps, full),
    }
    for name, step in steps.items():
        try:
            step()
        except (ImportError, importlib.metadata.PackageNotFoundError) as exc:
            caps.probe_errors[name] = f"not installed ({getattr(exc, 'name', None) or exc})"
        except Exception as exc:  # a probe must never take the node down
            caps.probe_errors[name] = f"{type(exc).__name__}: {exc}"
    return caps
