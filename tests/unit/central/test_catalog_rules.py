"""Catalog ingest rules (pure): a field keeps its first type; the field count is bounded."""


def test_a_field_keeps_its_first_type_and_the_field_count_is_bounded():
    from central.catalogs.service import _field_conflict

    types: dict[str, str] = {}
    assert _field_conflict(types, {"price": 3, "brand": "acme", "gift": None}) == ""
    assert types == {"price": "number", "brand": "str"}
    assert "is number" in _field_conflict(types, {"price": "cheap"})
    assert "is str" in _field_conflict(types, {"brand": True})
    assert types == {"price": "number", "brand": "str"}  # a refused update teaches nothing
    many = {f"f{i}": 1 for i in range(31)}
    assert "more than 32" in _field_conflict(types, many)
    assert _field_conflict(types, {"price": 2.5, "in_stock": False}) == ""
