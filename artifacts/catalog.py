"""Product catalogs: the JSONL a user hands to ``artifact index build`` and the columnar
``items.json`` an index bundle carries (ids, texts, filterable fields).

One record per line: ``{"id": "sku-1", "text": "...", "fields": {"category": "shoes",
"price": 59.9, "in_stock": true}}``. Every error names its line. A field keeps the type it has
first (``str``, ``number`` or ``bool``); a record that lacks it holds null (see
``edge_runtime.search.filters`` for how filters treat null).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import msgspec
import numpy as np

from artifacts.errors import InputError

FieldType = Literal["str", "number", "bool"]
MAX_ID_CHARS = 256
MAX_FIELDS = 32
FIELD_NAME_CHARS = 64
ITEMS_FILE = "items.json"
INDEX_FILE = "index.usearch"
DELTA_FILE = "delta.usearch"


# printable to Python, yet invisible or reordering: an id that looks like another is refused
_INVISIBLE = frozenset(
    "\u200b\u200c\u200d\u2060\ufeff\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
MAX_EXACT_INT = 2**53


class CatalogError(InputError):
    """A catalog or delta file is malformed; the message names the line."""


class FieldColumn(msgspec.Struct, kw_only=True):
    type: FieldType
    values: list[str | float | bool | None]


class ItemsDoc(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``items.json``: row ``i`` of every list is the item with key ``i`` in the vector index."""

    ids: list[str]
    texts: list[str]
    fields: dict[str, FieldColumn] = {}
    deletes: list[str] = []  # delta bundles: ids removed since the base


@dataclass
class Catalog:
    """Parsed records, in file order; ``fields`` is columnar (one list per field)."""

    ids: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    fields: dict[str, FieldColumn] = field(default_factory=dict)
    deletes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def to_doc(self) -> ItemsDoc:
        return ItemsDoc(ids=self.ids, texts=self.texts, fields=self.fields, deletes=self.deletes)


def _field_type(value: object) -> FieldType | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "str"
    return None


def _check_id(value: object, where: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise CatalogError(f"{where}: id must be a non-empty string or integer")
    if len(value) > MAX_ID_CHARS or not value.isprintable() or any(c in _INVISIBLE for c in value):
        raise CatalogError(f"{where}: id must be at most {MAX_ID_CHARS} printable characters")
    if value != value.strip():
        raise CatalogError(f"{where}: id {value!r} has leading or trailing spaces")
    return value


def _checked_type(name: str, value: object, where: str) -> FieldType:
    kind = _field_type(value)
    if kind is None:
        raise CatalogError(
            f"{where}: field {name!r} must be a string, number or bool, not {type(value).__name__}"
        )
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_EXACT_INT:
        raise CatalogError(f"{where}: field {name!r} is out of range (|n| <= 2**53)")
    if kind == "number" and not math.isfinite(float(value)):  # type: ignore[arg-type]
        raise CatalogError(f"{where}: field {name!r} must be a finite number")
    return kind


def _add_fields(cat: Catalog, raw: object, row: int, where: str) -> None:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise CatalogError(f"{where}: fields must be an object of name -> string/number/bool")
    for name, value in raw.items():
        if (
            not name
            or len(name) > FIELD_NAME_CHARS
            or not name.isascii()
            or not name.replace("_", "").isalnum()
        ):
            raise CatalogError(
                f"{where}: field name {name!r} must be 1-{FIELD_NAME_CHARS} letters, digits or _"
            )
        if value is None:
            continue
        kind = _checked_type(name, value, where)
        col = cat.fields.get(name)
        if col is None:
            if len(cat.fields) >= MAX_FIELDS:
                raise CatalogError(f"{where}: more than {MAX_FIELDS} distinct fields")
            col = cat.fields[name] = FieldColumn(type=kind, values=[None] * row)
        elif col.type != kind:
            raise CatalogError(
                f"{where}: field {name!r} is {kind} here but {col.type} on earlier lines"
            )
        col.values.append(float(value) if kind == "number" else value)
    for col in cat.fields.values():  # a field this record lacks is null
        if len(col.values) == row:
            col.values.append(None)


def parse_lines(lines: Iterable[bytes], source: str, *, allow_delete: bool = False) -> Catalog:
    """Records from JSONL lines. ``allow_delete``: a line ``{"id": ..., "delete": true}``
    removes that id (delta files)."""
    cat = Catalog()
    seen: dict[str, int] = {}
    decoder = msgspec.json.Decoder()
    for number, line in enumerate(lines, start=1):
        where = f"{source} line {number}"
        if not line.strip():
            continue
        try:
            rec = decoder.decode(line)
        except msgspec.DecodeError as exc:
            raise CatalogError(f"{where}: not valid JSON ({exc})") from None
        if not isinstance(rec, dict):
            raise CatalogError(f"{where}: each line must be a JSON object")
        unknown = set(rec) - {"id", "text", "fields", "delete"}
        if unknown:
            raise CatalogError(
                f"{where}: unknown key(s) {', '.join(sorted(unknown))}; a record holds id, "
                "text and fields (put category, price, ... under fields)"
            )
        item_id = _check_id(rec.get("id"), where)
        if item_id in seen:
            raise CatalogError(f"{where}: duplicate id {item_id!r} (first on line {seen[item_id]})")
        seen[item_id] = number
        if rec.get("delete") is not None:
            if not allow_delete or rec["delete"] is not True or set(rec) != {"id", "delete"}:
                raise CatalogError(
                    f"{where}: "
                    + (
                        'a delete line is exactly {"id": ..., "delete": true}'
                        if allow_delete
                        else "delete lines belong in an update, not in a catalog"
                    )
                )
            cat.deletes.append(item_id)
            continue
        text = rec.get("text")
        if not isinstance(text, str) or not text.strip():
            raise CatalogError(f"{where}: text is missing or empty")
        _add_fields(cat, rec.get("fields"), len(cat.ids), where)
        cat.ids.append(item_id)
        cat.texts.append(text)
    return cat


def read_catalog(path: Path, *, allow_delete: bool = False, allow_empty: bool = False) -> Catalog:
    path = Path(path)
    try:
        with path.open("rb") as fh:
            cat = parse_lines(fh, path.name, allow_delete=allow_delete)
    except OSError as exc:
        raise CatalogError(f"cannot read {path}: {exc}") from None
    if not len(cat) and not cat.deletes and not allow_empty:
        raise CatalogError(f"{path} holds no records: an index needs at least one product")
    return cat


def encode_items(cat: Catalog) -> bytes:
    return msgspec.json.encode(cat.to_doc())


def decode_items(data: bytes, *, expect_rows: int | None = None) -> Catalog:
    """``items.json`` from a (verified) bundle, checked for shape before anything indexes it."""
    try:
        doc = msgspec.json.decode(data, type=ItemsDoc)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CatalogError(f"{ITEMS_FILE} is malformed: {exc}") from None
    n = len(doc.ids)
    if len(doc.texts) != n or any(len(c.values) != n for c in doc.fields.values()):
        raise CatalogError(f"{ITEMS_FILE}: ids, texts and field columns differ in length")
    if expect_rows is not None and n != expect_rows:
        raise CatalogError(f"{ITEMS_FILE} lists {n} items, the vector index holds {expect_rows}")
    if len(set(doc.ids)) != n:
        raise CatalogError(f"{ITEMS_FILE} repeats an id")
    return Catalog(ids=doc.ids, texts=doc.texts, fields=doc.fields, deletes=doc.deletes)


@dataclass(frozen=True)
class Columns:
    """Filterable fields as numpy columns: ``str`` as codes into ``vocab`` (-1 = null), ``number``
    as float64 (NaN = null), ``bool`` as int8 (-1 = null)."""

    types: dict[str, FieldType]
    arrays: dict[str, np.ndarray]
    vocab: dict[str, dict[str, int]]

    @classmethod
    def of(cls, cat: Catalog) -> Columns:
        types: dict[str, FieldType] = {}
        arrays: dict[str, np.ndarray] = {}
        vocab: dict[str, dict[str, int]] = {}
        for name, col in cat.fields.items():
            types[name] = col.type
            if col.type == "number":
                arrays[name] = np.array(
                    [np.nan if v is None else float(v) for v in col.values], np.float64
                )
            elif col.type == "bool":
                arrays[name] = np.array(
                    [-1 if v is None else int(bool(v)) for v in col.values], np.int8
                )
            else:
                codes = vocab.setdefault(name, {})
                arrays[name] = np.array(
                    [-1 if v is None else codes.setdefault(str(v), len(codes)) for v in col.values],
                    np.int32,
                )
        return cls(types=types, arrays=arrays, vocab=vocab)
