"""BERT WordPiece for a short printable-ASCII text, in a few Python steps.

At c=1 a query is tokenised right after the previous query's model run has evicted the CPU's
caches, and the Rust tokenizer's walk (normaliser, pre-tokeniser, WordPiece, post-processor,
an ``Encoding`` with offsets) then costs 100-150 µs for a 5-word query, against 20-30 µs hot
(measured in the edge's process at c=1). For the texts most queries are — printable ASCII, a
BERT normaliser and pre-tokeniser — that pipeline reduces to: lowercase (uncased models), split
into runs of letters and digits and single punctuation characters, WordPiece each word, add
the template's special tokens. This does exactly that, with each word's pieces taken from the
Rust tokenizer itself the first time the word is seen (a bounded cache), so the ids are the
tokenizer's by construction; everything else (non-ASCII, control characters, a special token's
text, a text past the length budget) returns None and goes to the Rust tokenizer.

:meth:`AsciiWordPiece.of` builds one only for a tokenizer whose components are BERT's and whose
answers it matches on probe texts, so a tokenizer that only looks like BERT's is never
shortcut.
"""

from __future__ import annotations

import re
from typing import Any

from tokenizers import Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordPiece

MAX_CHARS = 512  # longer texts take the Rust path (they are rarely lone queries)
MAX_WORDS = 16_384  # cached words; the cache starts over when full
MAX_WORD_CHARS = 48  # longer words are tokenised every time, never cached ...
MAX_WORD_PIECES = 8  # ... and so are words of more pieces (bounded memory: under 8 MB)
MAX_ADDED = 64  # a tokenizer with more added tokens is not shortcut
# texts the fast path must answer exactly as the tokenizer does before it is used
PROBES = (
    "usb-c charger 65w",
    "Wireless Noise-Cancelling Headphones (2-pack), $99.99!",
    "x's #1 @home {a|b} ~ok^ `q` [x] <y> a_b c+d=e / f\\g ; h: i? j*k %",
    "  leading and   trailing  ",
    "supercalifragilisticexpialidocious " + "a" * 120,
    "UPPER lower MiXeD 1234567890",
    "",
)


class AsciiWordPiece:
    """``encode(text)``: the tokenizer's ids for ``text`` with its special tokens, or None
    when ``text`` is not one this shortcut answers exactly (see the module docstring)."""

    def __init__(
        self,
        pieces: Tokenizer,
        *,
        lowercase: bool,
        prefix: list[int],
        suffix: list[int],
        specials: tuple[str, ...],
        max_length: int,
    ) -> None:
        self._pieces = pieces  # the same tokenizer, without special tokens or truncation
        self._lowercase = lowercase
        self._split = re.compile(
            r"[a-z0-9]+|[^a-z0-9 ]" if lowercase else r"[A-Za-z0-9]+|[^A-Za-z0-9 ]"
        )
        self._prefix = prefix
        self._suffix = suffix
        # added tokens' texts as matched (raw and normalised), lowercased: a text holding one
        # takes the Rust path
        self._specials = specials
        self._budget = max_length - len(suffix)
        self._words: dict[str, list[int]] = {}

    @classmethod
    def of(cls, full: Tokenizer, pieces: Tokenizer, max_length: int) -> AsciiWordPiece | None:
        """The shortcut for ``full`` (no padding, truncated at ``max_length``; ``pieces``: the
        same tokenizer without padding or truncation), or None when it is not a BERT WordPiece
        one or does not answer the probe texts exactly as ``full`` does."""
        norm, pre = full.normalizer, full.pre_tokenizer
        if not (
            isinstance(norm, normalizers.BertNormalizer)
            and norm.clean_text
            and isinstance(pre, pre_tokenizers.BertPreTokenizer)
            and isinstance(full.model, WordPiece)
        ):
            return None
        one = full.encode("a")
        inner = pieces.encode("a", add_special_tokens=False).ids
        at = _find(one.ids, inner)
        if at is None or any(one.type_ids):
            return None
        added = list(full.get_added_tokens_decoder().values())
        if len(added) > MAX_ADDED:  # each is a substring check per text: Rust is faster then
            return None
        # the Rust tokenizer matches a normalised added token against the normalised text
        forms = {t.content for t in added} | {
            norm.normalize_str(t.content) for t in added if t.normalized
        }
        fast = cls(
            pieces,
            lowercase=bool(norm.lowercase),
            prefix=one.ids[:at],
            suffix=one.ids[at + len(inner) :],
            specials=tuple(sorted({f.lower() for f in forms if f})),
            max_length=max_length,
        )
        for text in PROBES:
            got = fast.encode(text)
            if got is None:
                continue
            try:
                want = full.encode(text)
            except Exception:  # e.g. only_second truncation of a single text: never shortcut
                return None
            if got != want.ids or any(want.type_ids) or want.overflowing:
                return None
        fast._words.clear()  # the probes' words need not stay
        return fast

    def encode(self, text: str) -> list[int] | None:
        if len(text) > MAX_CHARS or not (text.isascii() and text.isprintable()):
            return None  # non-ASCII, tabs, newlines, control characters: the Rust path
        low = text.lower()
        for special in self._specials:
            if special in low:
                return None
        ids = self._prefix.copy()
        words = self._words
        budget = self._budget
        for chunk in (low if self._lowercase else text).split():
            piece = words.get(chunk)
            if piece is None:
                if chunk.isalnum():
                    piece = self._learn(chunk)
                else:  # punctuation inside: each run of letters/digits and each mark apart
                    for word in self._split.findall(chunk):
                        ids += words.get(word) or self._learn(word)
                    if len(ids) > budget:
                        return None
                    continue
            ids += piece
            if len(ids) > budget:
                return None  # truncation: the Rust path says what was cut
        ids += self._suffix
        return ids

    def _learn(self, word: str) -> list[int]:
        piece = self._pieces.encode(word, add_special_tokens=False).ids
        # long words and many-piece words are rare (and gibberish): tokenised every time
        if len(word) <= MAX_WORD_CHARS and len(piece) <= MAX_WORD_PIECES:
            if len(self._words) >= MAX_WORDS:
                self._words.clear()
            self._words[word] = piece
        return piece


def _find(seq: list[int], sub: list[Any]) -> int | None:
    """Where ``sub`` first occurs in ``seq`` (None: nowhere)."""
    for i in range(len(seq) - len(sub) + 1):
        if seq[i : i + len(sub)] == sub:
            return i
    return None
