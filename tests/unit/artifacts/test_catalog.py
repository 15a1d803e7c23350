"""Catalog JSONL parsing: every error names its line; fields keep one type; items.json shape."""

import json

import numpy as np
import pytest

from artifacts.catalog import CatalogError, Columns, decode_items, encode_items, read_catalog


def write(tmp_path, lines) -> object:
    p = tmp_path / "catalog.jsonl"
    p.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return p


def test_parses_records_fields_and_nulls(tmp_path):
    cat = read_catalog(
        write(
            tmp_path,
            [
                {"id": "a", "text": "red shoe", "fields": {"category": "shoes", "price": 10}},
                "",
                {"id": 7, "text": "blue lamp", "fields": {"in_stock": True}},
                {"id": "c", "text": "green cup"},
            ],
        )
    )
    assert cat.ids == ["a", "7", "c"] and cat.texts[1] == "blue lamp"
    assert cat.fields["category"].values == ["shoes", None, None]
    assert cat.fields["price"].values == [10.0, None, None]
    assert cat.fields["in_stock"].values == [None, True, None]
    cols = Columns.of(cat)
    assert cols.arrays["category"].tolist() == [0, -1, -1]
    assert np.isnan(cols.arrays["price"][1]) and cols.arrays["in_stock"].tolist() == [-1, 1, -1]
    again = decode_items(encode_items(cat), expect_rows=3)
    assert again.ids == cat.ids and again.fields["price"].values == cat.fields["price"].values


@pytest.mark.parametrize(
    ("lines", "match"),
    [
        (["{not json"], "line 1: not valid JSON"),
        (["[1, 2]"], "line 1: each line must be a JSON object"),
        (
            [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}],
            "line 2: duplicate id 'a' \\(first on line 1\\)",
        ),
        ([{"id": "a"}], "line 1: text is missing"),
        ([{"id": "a", "text": "   "}], "line 1: text is missing or empty"),
        ([{"text": "x"}], "line 1: id must be"),
        ([{"id": "", "text": "x"}], "line 1: id must be"),
        ([{"id": True, "text": "x"}], "line 1: id must be"),
        ([{"id": "a\nb", "text": "x"}], "printable"),
        ([{"id": "x" * 300, "text": "x"}], "at most 256"),
        ([{"id": "a", "title": "x"}], "unknown key\\(s\\) title"),
        ([{"id": "sku-1 ", "text": "x"}], "leading or trailing spaces"),
        ([{"id": "sku\u202e1", "text": "x"}], "printable"),
        ([{"id": "sku\u200b1", "text": "x"}], "printable"),
        ([{"id": "sku\x7f", "text": "x"}], "printable"),
        ([{"id": "a", "text": "x", "fields": {"\u0661": 1}}], "field name"),
        ([{"id": "a", "text": "x", "fields": {"p": 9**40}}], "out of range"),
        ([{"id": "a", "text": "x", "fields": [1]}], "fields must be an object"),
        ([{"id": "a", "text": "x", "fields": {"p": [1]}}], "string, number or bool, not list"),
        ([{"id": "a", "text": "x", "fields": {"bad name": 1}}], "field name"),
        (
            [
                {"id": "a", "text": "x", "fields": {"p": 1}},
                {"id": "b", "text": "y", "fields": {"p": "1"}},
            ],
            "line 2: field 'p' is str here but number on earlier lines",
        ),
        ([{"id": "a", "delete": True}], "delete lines belong in an update"),
        ([], "holds no records"),
    ],
)
def test_bad_catalogs_name_the_line(tmp_path, lines, match):
    with pytest.raises(CatalogError, match=match):
        read_catalog(write(tmp_path, lines))


def test_out_of_range_numbers_are_refused(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text('{"id": "a", "text": "x", "fields": {"price": 1e999}}\n')
    with pytest.raises(CatalogError, match="line 1: not valid JSON"):
        read_catalog(p)


def test_deletes_in_updates(tmp_path):
    cat = read_catalog(
        write(tmp_path, [{"id": "a", "delete": True}, {"id": "b", "text": "new"}]),
        allow_delete=True,
    )
    assert cat.deletes == ["a"] and cat.ids == ["b"]
    with pytest.raises(CatalogError, match="exactly"):
        read_catalog(write(tmp_path, [{"id": "a", "delete": False}]), allow_delete=True)


def test_missing_file_and_malformed_items(tmp_path):
    with pytest.raises(CatalogError, match="cannot read"):
        read_catalog(tmp_path / "nope.jsonl")
    with pytest.raises(CatalogError, match="malformed"):
        decode_items(b'{"ids": "x"}')
    with pytest.raises(CatalogError, match="differ in length"):
        decode_items(b'{"ids": ["a"], "texts": []}')
    with pytest.raises(CatalogError, match="vector index holds 2"):
        decode_items(b'{"ids": ["a"], "texts": ["x"]}', expect_rows=2)
    with pytest.raises(CatalogError, match="repeats an id"):
        decode_items(b'{"ids": ["a", "a"], "texts": ["x", "y"]}')
