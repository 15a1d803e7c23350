"""Search filters as boolean masks over an index's field columns (pure functions).

``{"category": "shoes", "price": {"lt": 100}, "brand": {"in": ["acme", "zen"]},
"in_stock": true}``: every condition must hold (AND). Operators: ``eq``, ``ne``, ``in``,
``nin``, ``lt``, ``lte``, ``gt``, ``gte`` (the last four on numbers only). A product without
the field (null) matches no ``eq``/``in``/comparison and every ``ne``/``nin``: "not shoes"
includes products with no category.
"""

from __future__ import annotations

import numpy as np

from artifacts.catalog import Columns
from edge_runtime.errors import BadRequest

OPS = ("eq", "ne", "in", "nin", "lt", "lte", "gt", "gte")
MAX_IN = 1024


MAX_EXACT_INT = 2**53  # past this an integer has no exact float64 (and may overflow one)


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _scalar(name: str, kind: str, value: object) -> object:
    ok = {
        "str": isinstance(value, str),
        "bool": isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
    }[kind]
    if not ok:
        raise BadRequest(f"filter on {name!r} needs a {kind} value, got {_shown(value)}")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_EXACT_INT:
        raise BadRequest(f"filter on {name!r}: {_shown(value)} is out of range (|n| <= 2**53)")
    return value


def _codes(cols: Columns, name: str, kind: str, values: list) -> np.ndarray:
    """Values as the column's storage (string codes; unknown strings match nothing)."""
    vals = [_scalar(name, kind, v) for v in values]
    if kind == "str":
        vocab = cols.vocab.get(name, {})
        return np.array([vocab.get(str(v), -2) for v in vals], np.int32)
    if kind == "bool":
        return np.array([int(bool(v)) for v in vals], np.int8)
    return np.array(vals, np.float64)


def _condition(cols: Columns, name: str, op: str, value: object) -> np.ndarray:
    kind = cols.types[name]
    col = cols.arrays[name]
    null = np.isnan(col) if kind == "number" else col < 0
    if op in ("in", "nin"):
        if not isinstance(value, list) or not value or len(value) > MAX_IN:
            raise BadRequest(f"filter {name}.{op} needs a list of 1 to {MAX_IN} values")
        hit = np.isin(col, _codes(cols, name, kind, value)) & ~null
        return hit if op == "in" else ~hit
    if op in ("eq", "ne"):
        hit = (col == _codes(cols, name, kind, [value])[0]) & ~null
        return hit if op == "eq" else ~hit
    if kind != "number":
        raise BadRequest(f"filter {name}.{op} compares numbers; {name!r} is a {kind} field")
    bound = float(_scalar(name, kind, value))  # type: ignore[arg-type]
    with np.errstate(invalid="ignore"):
        return {"lt": col < bound, "lte": col <= bound, "gt": col > bound, "gte": col >= bound}[op]


def compile_filter(spec: object, cols: Columns, rows: int) -> np.ndarray | None:
    """The rows (of ``rows``) that ``spec`` admits; ``None``: no filter, every row."""
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise BadRequest("filter must be an object of field -> value or {operator: value}")
    if not spec:
        return None
    mask = np.ones(rows, bool)
    for name, cond in spec.items():
        if name not in cols.types:
            known = ", ".join(sorted(cols.types)) or "none"
            raise BadRequest(f"unknown filter field {name!r}; this index has: {known}")
        if isinstance(cond, dict):
            if not cond:
                raise BadRequest(f"filter on {name!r} is an empty object")
            for op, value in cond.items():
                if op not in OPS:
                    raise BadRequest(
                        f"unknown filter operator {op!r} on {name!r}; use {', '.join(OPS)}"
                    )
                mask &= _condition(cols, name, op, value)
        else:
            mask &= _condition(cols, name, "eq", cond)
    return mask
