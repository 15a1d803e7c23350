"""The texts the serving and backend benchmarks send: like the users' traffic, not the fixtures.

Both come from the held-out generator (:mod:`builder.data.heldout`, templates never used for
calibration) with a seed no gate or build uses, so the builder never tuned on them:

* ``queries``: search queries (short, typos, non-Latin, codes, natural language);
* ``product_mix``: product texts as a catalog sends them — titles, plus ``long_share`` (5%) long
  texts (prose past the 256-token limit, spec sheets, HTML), shuffled. One long text costs as
  many tokens as ten titles, so a server that pads titles to it loses most of its throughput.
"""

from __future__ import annotations

import random

SEED_OFFSET = 101  # heldout.SEED + this: a seed no gate uses


def texts(n: int = 2000, long_share: float = 0.05) -> tuple[list[str], list[str]]:
    """(queries, product mix), ``n`` of each, deterministic."""
    from builder.data import heldout

    split = heldout.search_split(seed=heldout.SEED + SEED_OFFSET, n_queries=n, n_corpus=2 * n)
    titles = [t.text for t in split.corpus if t.slice.startswith("title")]
    longs = [t.text for t in split.corpus if not t.slice.startswith("title")]
    n_long = round(n * long_share)
    mix = titles[: n - n_long] + longs[:n_long]
    random.Random(0).shuffle(mix)
    return [q.text for q in split.queries], mix


def padding_share(lengths: list[list[int]]) -> float:
    """The share of a run's tokens that were padding, given each batch's input lengths."""
    padded = sum(max(b) * len(b) for b in lengths if b)
    real = sum(sum(b) for b in lengths)
    return 1 - real / padded if padded else 0.0
