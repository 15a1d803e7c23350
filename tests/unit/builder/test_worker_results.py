"""What a build worker does with a finished job's result: a verification it could not do (say,
BF16 numerics on a host without native BF16) is no verdict and goes back for another worker."""

from builder.worker import result_action


def test_a_verdict_is_attested_passed_or_not():
    for passed in (True, False):
        result = {"passed": passed, "verified": True, "reason": "", "retry": False}
        assert result_action("verify", result) == "attest"


def test_a_verification_this_host_could_not_do_is_not_attested():
    result = {"passed": False, "verified": True, "reason": "no native BF16", "retry": True}
    assert result_action("verify", result) == "fail"


def test_builds_hand_over_or_fail():
    assert result_action("build", {"passed": True, "path": "/x"}) == "hand_over"
    assert result_action("build", {"passed": False, "reason": "gate"}) == "fail"
    # a build's result never attests, whatever it carries
    assert result_action("build", {"passed": True, "verified": True, "path": "/x"}) == "hand_over"
