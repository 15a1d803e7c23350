"""onnx-fp32: the optimum master itself; the universal last resort."""

from __future__ import annotations

from pathlib import Path

import onnxruntime

from artifacts.manifest import Requires
from builder.runners import OrtRunner
from builder.targets.base import Artifact, BuildContext, Candidate

ORT_MIN = ">=1.16"  # opset 17 + the contrib ops used by the INT8 graphs


def candidates(ctx: BuildContext) -> list[Candidate]:
    def make(_workdir: Path) -> Artifact:
        return Artifact(
            files={"model.onnx": ctx.master.path},
            runner=OrtRunner(ctx.master.path, ctx.master.output_name, threads=ctx.threads),
            requires=Requires(onnxruntime=ORT_MIN),
            runtime={"graph_optimization": "ORT_ENABLE_ALL", "built_with": onnxruntime.__version__},
            precision="fp32",
        )

    return [Candidate("fp32 (onnxruntime graph optimisation at load)", make)]
