from builder.data.corpus import generate, split


def test_corpus_sizes_and_determinism():
    c = generate()
    assert len(c.queries) >= 2000 and len(c.products) >= 5000 and len(c.descriptions) >= 1000
    assert generate.__wrapped__().queries[:50] == c.queries[:50]
    other = generate.__wrapped__(seed=1)
    assert other.queries[:50] != c.queries[:50]


def test_corpus_has_the_hard_cases():
    c = generate()
    assert all(2 <= len(q.split()) <= 8 for q in c.queries)
    assert all(8 <= len(t.split()) <= 30 for t in c.titles)
    assert all(40 <= len(d.split()) <= 151 for d in c.descriptions)
    non_ascii = [q for q in c.queries if any(ord(ch) > 127 for ch in q)]
    assert len(non_ascii) > 50  # non-English queries
    assert any(any(ch.isdigit() for ch in q) and "-" in q for q in c.queries)  # model numbers
    assert len(c.groups) == len(c.queries)
    assert all(sorted(g.grades).count(2) == 1 for g in c.groups[:100])


def test_split_is_disjoint():
    cal, ev = split(generate())
    assert set(cal.queries).isdisjoint(ev.queries)
    assert {p.id for p in cal.products}.isdisjoint({p.id for p in ev.products})
    assert 0.1 < len(ev.queries) / (len(ev.queries) + len(cal.queries)) < 0.3
