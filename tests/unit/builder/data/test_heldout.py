"""The gate's eval data: disjoint from calibration in text, seeds and vocabulary; sliced."""

from builder.data import heldout
from builder.data.corpus import CATALOG, generate
from builder.data.datasets import ADVISORY, DECIDING, calibration_items, eval_splits


def _calibration_text() -> str:
    return "\n".join(
        t if isinstance(t, str) else " ".join(t)
        for t in calibration_items("embedding", None, limit=100_000)
    )


def test_eval_vocabulary_is_not_the_calibration_vocabulary():
    assert set(heldout.VOCAB).isdisjoint(CATALOG)
    cal = _calibration_text().lower()
    for spec in heldout.VOCAB.values():
        for noun in spec["nouns"]:
            assert noun.lower() not in cal, noun
    assert heldout.SEED != 20261129  # the calibration corpus's seed
    shipped = generate()
    splits = eval_splits("embedding", None)
    texts = {t for s in splits for t in s.items("embedding")}
    assert texts.isdisjoint(shipped.queries) and texts.isdisjoint(shipped.titles)


def test_two_deciding_splits_built_differently_with_the_hard_slices():
    search, near = eval_splits("embedding", None)
    assert (search.name, near.name) == ("search", "near-duplicates")
    assert search.role == near.role == DECIDING
    comp = search.composition("embedding")
    for name in (
        "query:short",
        "query:typo-heavy",
        "query:all-caps",
        "query:non-latin",
        "query:other-latin",
        "query:codes-units",
        "query:emoji",
        "query:natural-language",
        "product:title",
        "product:long-description",
        "product:spec-sheet",
        "product:html",
        "product:title-non-latin",
        "product:title-shouty",
    ):
        assert comp.get(name, 0) >= 10, (name, comp)
    assert len(search.products) > len(search.queries) * 4  # a catalog, not a list of pairs
    long_texts = [
        p
        for p, s in zip(search.products, search.product_slices, strict=True)
        if s == "long-description"
    ]
    assert min(len(t.split()) for t in long_texts) >= 220  # past 256 word pieces
    # near-duplicates: every query's relevant products are a family of near-identical titles
    assert all(len(r) >= 2 for r in near.relevant)
    fam = [near.products[i] for i in near.relevant[0]]
    assert len(set(fam)) >= 2
    assert set(near.composition("embedding")) == {
        "query:title-as-query",
        "query:description-as-query",
        "product:variant-title",
    }


def test_every_task_gets_both_splits_and_they_are_deterministic():
    for task in ("embedding", "rerank", "classify"):
        a = eval_splits(task, None, limit=200)
        b = eval_splits(task, None, limit=200)
        assert [s.items(task) for s in a] == [s.items(task) for s in b]
        assert len(a) == 2 and all(s.items(task) for s in a)
        assert all(len(s.item_slices(task)) == len(s.items(task)) for s in a)


def test_own_eval_set_decides_with_relevance_and_slices(tmp_path):
    f = tmp_path / "ev.jsonl"
    f.write_text(
        '{"query": "red shoe", "product": "Red running shoe", "slice": "short"}\n'
        '{"query": "red shoe", "product": "Crimson trainer"}\n'
        '{"query": "kettle 1.7l", "product": "Steel kettle 1.7 L"}\n'
        '{"text": "Blue wool scarf"}\n'
        + "".join(
            f'{{"query": "filler {i}", "product": "Filler product {i}"}}\n' for i in range(20)
        )
    )
    user, *generated = eval_splits("embedding", f, limit=200)
    assert user.role == DECIDING
    assert all(s.role == ADVISORY for s in generated) and len(generated) == 2
    assert user.queries[:3] == ["red shoe", "kettle 1.7l", "filler 0"]
    assert user.products[:5] == [
        "Red running shoe",
        "Crimson trainer",
        "Steel kettle 1.7 L",
        "Blue wool scarf",
        "Filler product 0",
    ]
    assert user.relevant[:3] == [[0, 1], [2], [4]]
    assert user.query_slices[:3] == ["short", "query", "query"]
    assert user.source == "user eval file ev.jsonl"  # no worker path in the manifest


def test_slice_names_are_bounded(tmp_path):
    import pytest

    from builder.data.datasets import read_jsonl
    from builder.errors import DatasetError

    many = tmp_path / "many.jsonl"
    many.write_text("".join(f'{{"text": "t{i}", "slice": "s{i}"}}\n' for i in range(40)))
    with pytest.raises(DatasetError, match=r":33: more than 32 distinct slices"):
        read_jsonl(many)
    long = tmp_path / "long.jsonl"
    long.write_text('{"text": "t", "slice": "' + "x" * 65 + '"}\n')
    with pytest.raises(DatasetError, match=r":1: 'slice' must be 1-64 letters"):
        read_jsonl(long)
    typed = tmp_path / "typed.jsonl"
    typed.write_text('{"text": "t", "slice": 3}\n')
    with pytest.raises(DatasetError, match="must be a string"):
        read_jsonl(typed)


def test_a_user_eval_file_too_small_or_empty_is_refused(tmp_path):
    import pytest

    from builder.errors import DatasetError

    tiny = tmp_path / "tiny.jsonl"
    tiny.write_text('{"query": "q", "product": "p"}\n{"text": "a"}\n')
    with pytest.raises(
        DatasetError, match=r"too small to decide a gate: 1 queries \(at least 20\)"
    ):
        eval_splits("embedding", tiny)
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"query": "q", "product": ""}\n')
    with pytest.raises(DatasetError, match=":1: 'product' is empty"):
        eval_splits("embedding", empty)
    markup = tmp_path / "markup.jsonl"
    markup.write_text('{"text": "t", "slice": "x[/dim] [green]passed"}\n')
    with pytest.raises(DatasetError, match="letters, digits"):
        eval_splits("embedding", markup)
    deep = tmp_path / "deep.jsonl"
    deep.write_text("[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(DatasetError, match=":1: not valid JSON|expected a JSON object"):
        eval_splits("embedding", deep)
    huge = tmp_path / "huge.jsonl"
    huge.write_text('{"text": "' + "x" * 20_000 + '"}\n')
    with pytest.raises(DatasetError, match="longer than 16384"):
        eval_splits("embedding", huge)
