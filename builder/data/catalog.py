"""Generated product catalogs (JSONL for ``artifact index build``): titles, some long
descriptions, and the fields shoppers filter on. For the demo, the tests and ``bench/``."""

from __future__ import annotations

import json
import random
from pathlib import Path

from builder.data.corpus import generate


def catalog_records(n: int, *, seed: int = 4242, descriptions: float = 0.05) -> list[dict]:
    """``n`` products: ``{"id", "text", "fields": {category, brand, price, in_stock}}``."""
    corpus = generate(seed=seed, n_products=n, n_descriptions=int(n * descriptions), n_queries=0)
    rng = random.Random(seed)
    records = []
    for p in corpus.products:
        text = f"{p.title}. {p.description}" if p.description else p.title
        fields = {
            "category": p.category,
            "brand": p.brand,
            "price": round(rng.uniform(3, 600), 2),
            "in_stock": rng.random() < 0.8,
        }
        records.append({"id": p.id, "text": text, "fields": fields})
    return records


def write_catalog(path: Path, n: int, *, seed: int = 4242) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        for rec in catalog_records(n, seed=seed):
            fh.write(json.dumps(rec) + "\n")
    return path
