"""`artifact submit --wait` as a script or CI job runs it: stdout is not a terminal, so progress
is timestamped log lines; `--timeout` ends the wait with a documented exit code (3: still
running or queued, 4: only waiting for a capable worker); the build itself goes on."""

import os
import re
import subprocess
import sys

from artifacts.cli.builds import ProgressLog, exit_code
from artifacts.cli.runner import ExitCode
from artifacts.client import RegistryClient
from artifacts.wire import BuildInfo, JobInfo

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


def submit(central, model_dir, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SHIPYARD_REGISTRY": central.url, "SHIPYARD_TOKEN": central.admin_token}
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from artifacts.cli import main; sys.exit(main())",
            "submit",
            str(model_dir),
            "--model",
            "m",
            "--task",
            "embedding",
            *args,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_waiting_for_a_capable_worker_exits_4_with_log_lines(central, tiny_models):
    worker, _ = central.worker_client("cpu-box", ["onnx-fp32", "onnx-int8"])
    r = submit(
        central, tiny_models["embedding"], "--targets", "tensorrt-fp16", "--wait", "--timeout", "3"
    )
    assert r.returncode == ExitCode.NO_CAPABLE_WORKER == 4, r.stderr
    assert re.search(rf"^{STAMP} build #1 m: \w+", r.stdout, re.M), r.stdout
    assert re.search(
        rf"^{STAMP} build #1 tensorrt-fp16: waiting-for-capable-worker — no live worker can build tensorrt-fp16: it needs an NVIDIA GPU",
        r.stdout,
        re.M,
    ), r.stdout
    assert (
        "timed out after 3 s" in r.stderr
        and "waiting for a capable worker: tensorrt-fp16" in r.stderr
    )
    with RegistryClient(central.url, central.admin_token) as c:
        assert c.build(1).state not in ("failed", "cancelled")  # the build goes on
    worker.close()


def test_still_queued_at_the_timeout_exits_3(central, tiny_models):
    worker, _ = central.worker_client("idle-box", ["onnx-fp32"])  # capable, never leases
    r = submit(
        central, tiny_models["embedding"], "--targets", "onnx-fp32", "--wait", "--timeout", "2"
    )
    assert r.returncode == ExitCode.TIMED_OUT == 3, (r.stdout, r.stderr)
    assert re.search(rf"^{STAMP} build #1 onnx-fp32: queued", r.stdout, re.M), r.stdout
    assert "timed out after 2 s" in r.stderr and "capable worker" not in r.stderr
    worker.close()


def test_bad_timeout_is_a_usage_error(central, tiny_models):
    r = submit(central, tiny_models["embedding"], "--wait", "--timeout", "-1")
    assert r.returncode == ExitCode.USAGE == 2


# ---- the pure parts ---------------------------------------------------------------------------


def info(state: str, *jobs: tuple[str, str]) -> BuildInfo:
    return BuildInfo(
        id=7,
        model="m",
        task="embedding",
        state=state,  # type: ignore[arg-type]
        created_at="",
        jobs=[JobInfo(id=i, target=t, state=s) for i, (t, s) in enumerate(jobs)],  # type: ignore[arg-type]
    )


def test_exit_codes():
    assert exit_code(info("passed", ("onnx-fp32", "passed"))) == 0
    assert exit_code(info("failed", ("onnx-fp32", "failed"))) == 1
    assert exit_code(info("partial", ("onnx-fp32", "passed"), ("onnx-int8", "failed"))) == 1
    assert exit_code(info("cancelled", ("onnx-fp32", "cancelled"))) == 1
    running = info(
        "running", ("onnx-fp32", "running"), ("tensorrt-fp16", "waiting-for-capable-worker")
    )
    assert exit_code(running) == 3
    waiting = info(
        "running", ("onnx-fp32", "passed"), ("tensorrt-fp16", "waiting-for-capable-worker")
    )
    assert exit_code(waiting) == 4


def test_progress_log_prints_changes_only():
    lines: list[str] = []
    log = ProgressLog(lines.append)
    log.update(info("running", ("onnx-fp32", "running")))
    log.update(info("running", ("onnx-fp32", "running")))
    log.update(info("passed", ("onnx-fp32", "passed")))
    assert [re.sub(STAMP + " ", "", x) for x in lines] == [
        "build #7 m: running",
        "build #7 onnx-fp32: running",
        "build #7 m: passed",
        "build #7 onnx-fp32: passed",
    ]


def test_no_capable_worker_past_the_deadline_exits_4_and_says_how_to_finish(central, tiny_models):
    worker, _ = central.worker_client("cpu-box", ["onnx-fp32", "onnx-int8"])
    r = submit(
        central,
        tiny_models["embedding"],
        "--targets",
        "tensorrt-fp16",
        "--worker-deadline",
        "1",
        "--wait",
        "--timeout",
        "60",
    )
    assert r.returncode == ExitCode.NO_CAPABLE_WORKER == 4, (r.stdout, r.stderr)
    assert re.search(
        rf"^{STAMP} build #1 tensorrt-fp16: no-capable-worker — no capable worker for 1 s: ",
        r.stdout,
        re.M,
    ), r.stdout
    assert "timed out" not in r.stderr
    assert "--targets tensorrt-fp16 --into-version 1" in r.stderr, r.stderr
    worker.close()
