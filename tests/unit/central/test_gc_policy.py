"""Retention decisions as pure functions: what stays, and why."""

import pytest

from central.gc.policy import (
    Event,
    Facts,
    RetentionPolicy,
    decide,
    recent_history,
    unreferenced,
)


def kept(decisions) -> dict:
    return {(d.model, d.version): d.why for d in decisions if d.keep}


def test_newest_kept_and_everything_something_needs():
    facts = Facts(
        versions={"m": [1, 2, 3, 4, 5, 6]},
        channels={("m", 2): ["stable"]},
        history={("m", 3): ["stable"]},
        edges={("m", 1): ["edge-eu-1"]},
        building={("m", 4): [17]},
    )
    out = kept(decide(facts, RetentionPolicy(keep=1)))
    assert set(out) == {("m", 6), ("m", 2), ("m", 3), ("m", 1), ("m", 4)}
    assert out[("m", 6)] == "among the newest 1"
    assert out[("m", 2)] == "channel stable points at it"
    assert out[("m", 3)] == "in channel stable's recent history"
    assert out[("m", 1)] == "edge edge-eu-1 ran it recently"
    assert out[("m", 4)] == "build #17 is building into it"
    gone = [d for d in decide(facts, RetentionPolicy(keep=1)) if not d.keep]
    assert [(d.model, d.version, d.why) for d in gone] == [("m", 5, "nothing needs it")]


def test_a_kept_index_keeps_its_model_version_and_base():
    facts = Facts(
        versions={"emb": [1, 2, 3], "catalog": [1, 2, 3]},
        channels={("catalog", 2): ["stable"]},
        locks={
            ("catalog", 2): [("emb", 1), ("catalog", 1)],  # a delta over v1, embedded by emb v1
            ("catalog", 1): [("emb", 1)],
            ("catalog", 3): [("emb", 3)],
        },
    )
    out = kept(decide(facts, RetentionPolicy(keep=1)))
    assert ("emb", 1) in out and out[("emb", 1)].startswith("kept catalog v")
    assert ("catalog", 1) in out and "kept catalog v2 needs it" in out[("catalog", 1)]
    assert ("emb", 2) not in out


def test_recent_history_is_what_rollback_can_reach():
    def ev(*pairs):
        return [Event(a, v) for a, v in pairs]

    # promote 1..5, roll back twice: stable is v3, and rollback's next targets are v2, v1
    events = ev(*[("promote", v) for v in range(1, 6)], ("rollback", 4), ("rollback", 3))
    assert recent_history(events, 3) == [2, 1, 3, 4, 5]  # rollback targets, then recent
    events = ev(("promote", 1), ("promote", 2), ("promote", 3), ("rollback", 2), ("promote", 4))
    assert recent_history(events, 2) == [2, 1, 4]
    assert recent_history(events, 0) == []


def test_unreferenced_blobs_past_the_grace_only():
    blobs = {"a": 10.0, "b": 10.0, "c": 99.0}
    assert unreferenced(blobs, {"a"}, cutoff=50.0) == ["b"]


def test_bad_policy_is_refused():
    with pytest.raises(ValueError):
        RetentionPolicy(keep=0)
