"""Builds that cannot hang: the deadline clock per job, the request's options, and the exit code
a script sees. The service end to end is in tests/integration/central/test_worker_deadline.py."""

import datetime as dt

import pytest

from artifacts.cli.builds import exit_code
from artifacts.cli.runner import ExitCode
from artifacts.errors import Unprocessable
from artifacts.provenance import BuildParameters
from artifacts.states import TERMINAL_JOB_STATES, BuildState, JobState
from artifacts.wire import BuildInfo, BuildRequest, JobInfo
from central.builds.cache import cache_prefix
from central.builds.deadline import MAX_DEADLINE_S, deadline_of, expiry_note, judge
from central.builds.service import check_options

SOURCE = "sha256:" + "a" * 64
T0 = dt.datetime(2026, 11, 30, 8, 0, tzinfo=dt.UTC)
GAP = "no live worker can build tensorrt-fp16: it needs an NVIDIA GPU with TensorRT"


def req(**kw) -> BuildRequest:
    return BuildRequest(model="m", task="embedding", source_blob=SOURCE, **kw)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def test_the_clock_starts_when_no_capable_worker_is_live():
    v = judge(GAP, None, T0, 60)
    assert v.waiting_since == T0 and not v.expired


def test_the_clock_keeps_its_start_and_expires_at_the_deadline():
    assert not judge(GAP, T0, at(59.9), 60).expired
    v = judge(GAP, T0, at(60), 60)
    assert v.expired and v.waiting_since == T0


def test_a_capable_worker_resets_the_clock():
    v = judge("", T0, at(3600), 60)
    assert v.waiting_since is None and not v.expired
    # it went away again: the clock starts afresh, the earlier wait does not count
    assert not judge(GAP, None, at(3601), 60).expired


def test_the_request_deadline_overrides_the_service_default():
    assert deadline_of(req(), 900.0) == 900.0
    assert deadline_of(req(worker_deadline_s=30.0), 900.0) == 30.0


def test_the_expiry_note_names_the_time():
    assert expiry_note(T0, 90) == (
        "; it ends no-capable-worker at 2026-11-30T08:01:30Z unless one appears"
    )


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"worker_deadline_s": 0.0}, "worker_deadline_s must be above 0"),
        ({"worker_deadline_s": -5.0}, "worker_deadline_s must be above 0"),
        ({"worker_deadline_s": MAX_DEADLINE_S + 1}, "at most 604800 s"),
        ({"into_version": 0}, "into_version must be a version number"),
    ],
)
def test_bad_options_are_refused(kw, message):
    with pytest.raises(Unprocessable, match=message):
        check_options(req(**kw))


def test_good_options_pass():
    check_options(req(worker_deadline_s=1.0, into_version=3, allow_partial=True))
    check_options(req(worker_deadline_s=MAX_DEADLINE_S))


def test_new_options_change_neither_cache_key_nor_provenance():
    """They say how to wait and where to register, not what is built: an identical build
    keeps its cache key and its provenance."""
    plain = req()
    other = req(worker_deadline_s=5.0, allow_partial=True, into_version=2)
    assert cache_prefix(plain, "onnx-fp32") == cache_prefix(other, "onnx-fp32")
    assert (
        BuildParameters.for_job(plain, "onnx-fp32", 2).as_dict()
        == BuildParameters.for_job(other, "onnx-fp32", 2).as_dict()
    )


def test_no_capable_worker_is_a_terminal_job_state():
    assert JobState.NO_CAPABLE_WORKER in TERMINAL_JOB_STATES
    assert JobState.NO_CAPABLE_WORKER.terminal


def info(state: BuildState, *jobs: JobState) -> BuildInfo:
    return BuildInfo(
        id=1,
        model="m",
        task="embedding",
        state=state,
        created_at="",
        jobs=[JobInfo(id=i, target=f"t{i}", state=s) for i, s in enumerate(jobs)],
    )


@pytest.mark.parametrize(
    ("build", "code"),
    [
        (info(BuildState.PASSED, JobState.PASSED), ExitCode.OK),
        (
            info(BuildState.PARTIAL, JobState.PASSED, JobState.NO_CAPABLE_WORKER),
            ExitCode.NO_CAPABLE_WORKER,
        ),
        (info(BuildState.FAILED, JobState.NO_CAPABLE_WORKER), ExitCode.NO_CAPABLE_WORKER),
        (  # a target failed its gate: that is the news, whatever else happened
            info(BuildState.PARTIAL, JobState.FAILED, JobState.NO_CAPABLE_WORKER),
            ExitCode.FAILED,
        ),
        (info(BuildState.PARTIAL, JobState.PASSED, JobState.FAILED), ExitCode.FAILED),
        (info(BuildState.CANCELLED, JobState.CANCELLED), ExitCode.FAILED),
        (info(BuildState.RUNNING, JobState.PASSED, JobState.WAITING), ExitCode.NO_CAPABLE_WORKER),
        (info(BuildState.RUNNING, JobState.RUNNING, JobState.WAITING), ExitCode.TIMED_OUT),
    ],
)
def test_exit_codes(build, code):
    assert exit_code(build) == code
