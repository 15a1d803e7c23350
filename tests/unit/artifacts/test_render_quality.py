"""`artifact inspect` shows the gate's intervals and each eval split with its worst slice."""

from rich.console import Console

from artifacts.cli.render import manifest_table, metric_text, split_text
from artifacts.manifest import EvalSplit
from tests.factories import make_manifest


def _split() -> EvalSplit:
    return EvalSplit(
        name="search",
        role="deciding",
        items=1200,
        composition={"query:short": 50, "query:non-latin": 46, "product:title": 600},
        metrics={"recall10_overlap": 0.9628, "cosine_min": 0.9945, "relevant_recall10": 0.6},
        intervals={"recall10_overlap": [0.9567, 0.9681], "cosine_min": [0.9945, 0.996]},
        slices={
            "query:short": {"recall10_overlap": 0.958, "cosine_min": 0.9959},
            "query:non-latin": {"recall10_overlap": 0.97, "cosine_min": 0.9945},
            "product:title": {"cosine_min": 0.998},
        },
        passed=True,
    )


def test_metric_text_shows_interval_and_direction():
    assert metric_text("recall10_overlap", 0.9628, [0.9567, 0.9681], 0.95) == (
        "recall10_overlap 0.9628 [0.9567–0.9681] (≥0.95)"
    )
    assert metric_text("batch_invariance_max_abs", 0.01, None, 0.05).endswith("(≤0.05)")


def test_split_text_names_the_worst_slice_per_metric():
    text = split_text(_split())
    assert "deciding · 1200 items in 3 slices" in text and "passed" in text
    assert "recall10_overlap 0.958 (query:short)" in text
    assert "cosine_min 0.9945 (query:non-latin)" in text
    assert "relevant_recall10" not in text.split("\n")[0]  # reported, not gated: no interval


def test_manifest_table_lists_every_split():
    m = make_manifest()
    m.quality.splits = [_split()]
    m.quality.intervals = {"recall10_overlap": [0.9567, 0.9681]}
    m.quality.confidence = 0.95
    m.quality.metrics["recall10_overlap"] = 0.9628
    console = Console(width=250, record=True)
    console.print(manifest_table(m))
    out = console.export_text()
    assert "eval: search" in out and "bootstrap 95%" in out and "[0.9567–0.9681]" in out


def test_signer_controlled_names_are_not_markup():
    split = _split()
    split.name = "[red]evil[/red]"
    split.slices = {"[/dim] [green]x": {"recall10_overlap": 0.5}}
    split.composition = {"[/dim] [green]x": 1}
    m = make_manifest()
    m.quality.splits = [split]
    m.quality.config = "[link=https://evil]x[/link]"
    console = Console(width=250, record=True)
    console.print(manifest_table(m))  # a stray closing tag would raise MarkupError
    out = console.export_text()
    assert "[red]evil[/red]" in out and "[/dim] [green]x" in out
    assert "[link=https://evil]x[/link]" in out
