"""Filter expressions → row masks: every operator, nulls, and clear errors."""

import numpy as np
import pytest

from artifacts.catalog import Catalog, Columns, FieldColumn
from edge_runtime.errors import BadRequest
from edge_runtime.search.filters import compile_filter

CAT = Catalog(
    ids=["a", "b", "c", "d"],
    texts=["w", "x", "y", "z"],
    fields={
        "category": FieldColumn(type="str", values=["shoes", "lamps", None, "shoes"]),
        "price": FieldColumn(type="number", values=[10.0, 50.0, 99.5, None]),
        "in_stock": FieldColumn(type="bool", values=[True, False, True, None]),
    },
)
COLS = Columns.of(CAT)


def rows(spec) -> list[str]:
    mask = compile_filter(spec, COLS, 4)
    return CAT.ids if mask is None else [i for i, m in zip(CAT.ids, mask, strict=True) if m]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, ["a", "b", "c", "d"]),
        ({}, ["a", "b", "c", "d"]),
        ({"category": "shoes"}, ["a", "d"]),
        ({"category": {"eq": "shoes"}}, ["a", "d"]),
        ({"category": {"ne": "shoes"}}, ["b", "c"]),  # a null is "not shoes"
        ({"category": {"in": ["lamps", "hats"]}}, ["b"]),
        ({"category": {"nin": ["lamps"]}}, ["a", "c", "d"]),
        ({"category": "hats"}, []),  # a value no item has
        ({"price": {"lt": 50}}, ["a"]),
        ({"price": {"lte": 50}}, ["a", "b"]),
        ({"price": {"gt": 10, "lt": 99.5}}, ["b"]),
        ({"price": {"gte": 0}}, ["a", "b", "c"]),  # null price never matches a bound
        ({"price": 50}, ["b"]),
        ({"in_stock": True}, ["a", "c"]),
        ({"in_stock": False}, ["b"]),
        ({"in_stock": True, "category": "shoes"}, ["a"]),
    ],
)
def test_operators(spec, expected):
    assert rows(spec) == expected


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ([1], "filter must be an object"),
        (
            {"colour": "red"},
            "unknown filter field 'colour'; this index has: category, in_stock, price",
        ),
        ({"price": {"between": [1, 2]}}, "unknown filter operator 'between'"),
        ({"price": {}}, "empty object"),
        ({"price": "cheap"}, "needs a number value"),
        ({"price": True}, "needs a number value"),
        ({"in_stock": 1}, "needs a bool value"),
        ({"category": {"lt": "m"}}, "compares numbers"),
        ({"category": {"in": "shoes"}}, "needs a list"),
        ({"category": {"in": []}}, "needs a list"),
        ({"category": {"in": ["x"] * 2000}}, "needs a list of 1 to 1024"),
        ({"category": {"in": [1]}}, "needs a str value"),
        ({"price": {"lt": 2**60}}, "out of range"),
        ({"price": {"in": [1, 9**99]}}, "out of range"),
        ({"category": "x" * 500}, None),  # a long value is fine (it matches nothing)
    ],
)
def test_bad_filters(spec, match):
    if match is None:
        assert not compile_filter(spec, COLS, 4).any()
        return
    with pytest.raises(BadRequest, match=match) as err:
        compile_filter(spec, COLS, 4)
    assert len(str(err.value)) < 200  # values are echoed cut short


def test_mask_is_boolean_per_row():
    mask = compile_filter({"price": {"lt": 60}}, COLS, 4)
    assert (
        mask is not None and mask.dtype == np.bool_ and mask.tolist() == [True, True, False, False]
    )
