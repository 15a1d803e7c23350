"""The lone-query tokenising shortcut gives exactly the Rust tokenizer's ids, type ids and
truncation flag — on texts it answers and on texts it hands back — and is built only for
tokenizers it matches."""

from __future__ import annotations

import random
import string

import pytest
from tokenizers import AddedToken, Tokenizer, normalizers, processors

import artifacts.ascii_wordpiece as aw
from artifacts.manifest import TokenizerSpec
from artifacts.textproc import TextEncoder
from tests.factories import minilm_dir

PRODUCTS = [
    "usb-c charger 65w",
    "Men's Trail-Running Shoes, Waterproof (Size 10.5)",
    '4K UHD Smart TV 55" — HDR10+',  # an em dash: the Rust path
    "ceramic non-stick frying pan 28cm w/ lid",
    "LEGO® Technic set #42115",  # ®: the Rust path
    "organic green tea, 100 bags [caffeine-free]",
    "a" * 101,  # past WordPiece's 100 characters per word: [UNK]
    "unaffable cafe 12.5cm x-large it's (pack of 3)",
    "[CLS] a text holding a special token's text",
    "mask [MASK] lower [mask]",
    "tab\tand\nnewline",
    "   ",
    "",
]


def texts(seed: int) -> list[str]:
    rng = random.Random(seed)
    out = list(PRODUCTS)
    out += [
        "".join(rng.choice(string.printable) for _ in range(rng.randint(0, 90)))
        for _ in range(1500)
    ]
    printable = string.ascii_letters + string.digits + string.punctuation + "    "
    out += ["".join(rng.choices(printable, k=rng.randint(0, 60))) for _ in range(1000)]
    words = ["red", "running", "shoes", "ultra-hd", "sofa,", "it's", "(3)", "x", "Zz9", "q.q"]
    out += [" ".join(rng.choices(words, k=rng.randint(1, 80))) for _ in range(300)]
    return out


def rust(path, max_length: int, strategy: str = "longest_first") -> Tokenizer:
    tok = Tokenizer.from_file(str(path))
    tok.no_padding()
    tok.enable_truncation(max_length=max_length, strategy=strategy)
    return tok


@pytest.mark.parametrize("max_length", [8, 16, 128])
def test_lone_texts_match_the_rust_tokenizer(max_length):
    path = minilm_dir() / "tokenizer.json"
    enc = TextEncoder(path, TokenizerSpec(max_length=max_length))
    assert enc._ascii is not None
    whole = rust(path, max_length)
    shortcut = 0
    for text in texts(max_length):
        want = whole.encode(text)
        (got,) = enc.encode([text])
        assert got.ids.tolist() == want.ids, text
        assert got.type_ids.tolist() == want.type_ids, text
        assert got.truncated == bool(want.overflowing), text
        shortcut += enc._ascii.encode(text) is not None
    assert shortcut > 250  # the shortcut answered a good share (the rest went to Rust)


def test_texts_it_does_not_answer_exactly_go_to_the_rust_tokenizer():
    enc = TextEncoder(minilm_dir() / "tokenizer.json", TokenizerSpec(max_length=16))
    fast = enc._ascii
    assert fast is not None
    assert fast.encode("usb-c charger 65w") is not None
    for text in [
        "café",  # not ASCII
        "tab\there",  # not printable
        "a [MASK] b",  # a special token's text
        "a [cls] b",  # ... in any case
        " ".join(["word"] * 20),  # past max_length: Rust says what was cut
        "x" * (aw.MAX_CHARS + 1),
    ]:
        assert fast.encode(text) is None, text


def test_the_word_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(aw, "MAX_WORDS", 50)
    enc = TextEncoder(minilm_dir() / "tokenizer.json", TokenizerSpec(max_length=128))
    whole = rust(minilm_dir() / "tokenizer.json", 128)
    assert enc._ascii is not None
    for i in range(400):
        text = f"w{i}x w{i}y"
        assert enc._ascii.encode(text) == whole.encode(text).ids
        assert len(enc._ascii._words) <= 50
    long_word = "x" * (aw.MAX_WORD_CHARS + 1)
    assert enc._ascii.encode(long_word) == whole.encode(long_word).ids
    assert long_word not in enc._ascii._words


def test_a_cased_bert_tokenizer_is_shortcut_exactly():
    path = minilm_dir() / "tokenizer.json"
    tok = rust(path, 64)
    tok.normalizer = normalizers.BertNormalizer(lowercase=False)
    pieces = Tokenizer.from_file(str(path))
    pieces.no_padding()
    pieces.no_truncation()
    pieces.normalizer = normalizers.BertNormalizer(lowercase=False)
    fast = aw.AsciiWordPiece.of(tok, pieces, 64)
    assert fast is not None and not fast._lowercase
    for text in texts(7)[:600]:
        got = fast.encode(text)
        if got is not None:
            assert got == tok.encode(text).ids, text


def test_not_built_for_a_tokenizer_it_does_not_match():
    path = minilm_dir() / "tokenizer.json"
    # type ids of 1 on a single text: the shortcut's zeros would be wrong
    odd = rust(path, 64)
    odd.post_processor = processors.TemplateProcessing(
        single="[CLS]:1 $A:1 [SEP]:1", special_tokens=[("[CLS]", 101), ("[SEP]", 102)]
    )
    pieces = rust(path, 64)
    pieces.no_truncation()
    assert aw.AsciiWordPiece.of(odd, pieces, 64) is None
    # not BERT's normaliser (e.g. NFKC + lowercase): never shortcut, whatever it answers
    other = rust(path, 64)
    other.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    assert aw.AsciiWordPiece.of(other, pieces, 64) is None


def test_a_text_past_the_limit_is_refused_as_the_rust_tokenizer_refuses_it():
    """only_second truncation cannot cut a single text: both paths raise, none answers."""
    path = minilm_dir() / "tokenizer.json"
    enc = TextEncoder(path, TokenizerSpec(max_length=16, truncation="only_second"))
    assert enc.encode(["short text"])[0].ids.tolist() == rust(path, 16).encode("short text").ids
    with pytest.raises(Exception):  # noqa: B017 - the tokenizer's own error
        enc.encode([" ".join(["word"] * 40)])


def test_added_tokens_are_matched_as_the_rust_tokenizer_matches_them():
    """A normalised added token matches the normalised text ("é-mail" matches "e-mail" once
    accents are stripped): such a text takes the Rust path, which answers the token's id."""
    path = minilm_dir() / "tokenizer.json"
    full, pieces = rust(path, 64), rust(path, 64)
    pieces.no_truncation()
    for tok in (full, pieces):
        tok.add_tokens([AddedToken("é-mail", normalized=True)])
    fast = aw.AsciiWordPiece.of(full, pieces, 64)
    assert fast is not None
    assert fast.encode("send e-mail now") is None
    assert fast.encode("send mail now") == full.encode("send mail now").ids
    # many added tokens: a substring check each per text would cost more than Rust
    many = rust(path, 64)
    many.add_special_tokens([f"[extra{i}]" for i in range(aw.MAX_ADDED)])
    assert aw.AsciiWordPiece.of(many, pieces, 64) is None


def test_a_lone_ascii_text_takes_the_shortcut_and_others_the_rust_tokenizer(monkeypatch):
    enc = TextEncoder(minilm_dir() / "tokenizer.json", TokenizerSpec(max_length=64))
    whole = rust(minilm_dir() / "tokenizer.json", 64)
    calls: list[str] = []

    class Recording:
        def __init__(self, inner):
            self.inner = inner

        def encode(self, text):
            calls.append(text)
            return self.inner.encode(text)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    monkeypatch.setattr(enc, "_plain", Recording(enc._plain))
    for text in ["usb-c charger 65w", "café crème", "two\nlines"]:
        (got,) = enc.encode([text])
        assert got.ids.tolist() == whole.encode(text).ids
    assert calls == ["café crème", "two\nlines"]
