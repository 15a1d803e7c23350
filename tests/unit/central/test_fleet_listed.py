"""Audit details for fleet hand-overs: a count, as many names as fit, and how many did not."""

from central.fleet.service import listed


def test_short_lists_are_whole_and_long_ones_say_how_many_are_missing():
    assert listed(["a", "b"]) == "2 node(s): a, b"
    names = [f"node-{i:03d}" for i in range(256)]
    text = listed(names)
    assert len(text) <= 2000
    assert text.startswith("256 node(s): node-000, node-001")
    shown = text.split(": ", 1)[1].split(" … ")[0].split(", ")
    assert text.endswith(f" … (+{256 - len(shown)} more)")
    assert shown == names[: len(shown)]
