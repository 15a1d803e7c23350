"""Pairs are tokenised side by side and joined by the tokenizer's own post-processing, so a
repeated query is tokenised once per request — with exactly the ids, type ids and truncation
flag that encoding each pair whole gives (the contract the builder's reference relies on)."""

from __future__ import annotations

import random

import pytest
from tokenizers import Tokenizer

from artifacts.manifest import TokenizerSpec
from artifacts.textproc import TextEncoder
from tests.factories import minilm_dir

WORDS = [
    "red",
    "running",
    "shoes",
    "waterproof",
    "jacket",
    "unaffable",
    "playing",
    "4k",
    "ultra-hd",
    "sofa,",
    "linen!",
    "café",
    "naïve",
    "日本語",
    "😀",
    "x-large",
    "12.5cm",
    "(pack",
    "of",
    "3)",
    "it's",
]


@pytest.mark.parametrize("strategy", ["longest_first", "only_first", "only_second"])
@pytest.mark.parametrize("max_length", [16, 33, 128])
def test_pairs_match_whole_pair_encoding(strategy, max_length):
    path = minilm_dir() / "tokenizer.json"
    enc = TextEncoder(path, TokenizerSpec(max_length=max_length, truncation=strategy, pair=True))
    whole = Tokenizer.from_file(str(path))
    whole.no_padding()
    whole.enable_truncation(max_length=max_length, strategy=strategy)
    rng = random.Random(max_length)
    query = " ".join(rng.choices(WORDS, k=rng.randint(1, 60)))
    pairs = [(query, " ".join(rng.choices(WORDS, k=rng.randint(1, 60)))) for _ in range(40)]
    pairs += [(" ".join(rng.choices(WORDS, k=rng.randint(1, 9))), "short doc") for _ in range(5)]
    compared = 0
    for pair in pairs:
        try:
            want = whole.encode(*pair)
        except Exception:  # only_first/only_second cannot always fit: both paths refuse
            with pytest.raises(Exception):  # noqa: B017
                enc.encode([pair])
            continue
        (got,) = enc.encode([pair])
        assert got.ids.tolist() == want.ids
        assert got.type_ids.tolist() == want.type_ids
        assert got.truncated == bool(want.overflowing)
        compared += 1
    assert compared >= 2  # (and every refusal was a refusal on both paths)
    # a whole request (one query, many documents) equals pair-by-pair encoding
    ok = [p for p in pairs[:40] if _fits(whole, p)]
    for got, pair in zip(enc.encode(ok), ok, strict=True):
        assert got.ids.tolist() == whole.encode(*pair).ids


def _fits(tok: Tokenizer, pair: tuple[str, str]) -> bool:
    try:
        tok.encode(*pair)
    except Exception:
        return False
    return True


@pytest.mark.parametrize("strategy", ["longest_first", "only_first"])
def test_a_huge_query_is_cut_before_joining_with_identical_results(strategy):
    """A query far past max_length, paired with many documents: the same ids as whole-pair
    encoding, and no per-pair copy of the query's overflow (bounded time)."""
    import time

    path = minilm_dir() / "tokenizer.json"
    enc = TextEncoder(path, TokenizerSpec(max_length=128, truncation=strategy, pair=True))
    whole = Tokenizer.from_file(str(path))
    whole.no_padding()
    whole.enable_truncation(max_length=128, strategy=strategy)
    rng = random.Random(7)
    query = " ".join(rng.choices(WORDS, k=6000))  # ~40 KB, ~10,000 tokens
    docs = [" ".join(rng.choices(WORDS, k=rng.randint(1, 20))) for _ in range(1024)]
    t0 = time.perf_counter()
    got = enc.encode([(query, d) for d in docs])
    elapsed = time.perf_counter() - t0
    for g, d in list(zip(got, docs, strict=True))[::128]:
        want = whole.encode(query, d)
        assert g.ids.tolist() == want.ids and g.type_ids.tolist() == want.type_ids
        assert g.truncated and bool(want.overflowing)
    assert all(len(g) <= 128 for g in got)
    assert elapsed < 2.0, elapsed  # was ~2 s and +400 MB before the cut (max_length 512)


@pytest.mark.parametrize("max_length", [8, 128])
def test_a_lone_text_encodes_as_it_would_in_a_batch(max_length):
    """One text skips the tokenizer's thread pool; ids, type ids and the truncation flag are
    what the same text gets inside a batch."""
    enc = TextEncoder(minilm_dir() / "tokenizer.json", TokenizerSpec(max_length=max_length))
    rng = random.Random(7)
    texts = [" ".join(rng.choices(WORDS, k=rng.randint(1, 40))) for _ in range(30)]
    in_batch = enc.encode(texts)
    for text, want in zip(texts, in_batch, strict=True):
        (got,) = enc.encode([text])
        assert got.ids.tolist() == want.ids.tolist()
        assert got.type_ids.tolist() == want.type_ids.tolist()
        assert got.truncated == want.truncated
    assert any(e.truncated for e in in_batch) == (max_length == 8)
