r"""Catalogue entries from files: the Open Bandit Dataset's ``item_context.csv`` and JSON lines.

``obd:PATH`` — ``item_context.csv`` (``,item_id,item_feature_0,...,item_feature_3``): the item id
as the OBD's events carry it (``str(int(item_id))``, see :mod:`producers.sources.obd`), the
hashed categorical ``item_feature_1`` as the category and the other features as attributes.

``jsonl:PATH`` — one JSON object per line with the fields of :class:`Item`: ``item_id``
(required), ``category``, ``available`` (default true), ``attributes`` (string values; numbers
and booleans are written as text) and ``updated_ms``. Unknown fields are an error (a typo such
as ``availabel`` must not pass silently); blank lines are skipped.

Neither file has a time of change: entries without ``updated_ms`` get ``now_ms``. Missing files
raise :class:`FileNotFoundError` at once; a bad row or line :class:`ValueError` naming file and line.

>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "items.jsonl")
>>> _ = open(path, "w").write('{"item_id": "a", "category": "shoes", "attributes": {"size": 42}}\n\n'
...                          '{"item_id": "b", "available": false, "updated_ms": 5}\n')
>>> [(i.item_id, i.category, i.available, i.attributes, i.updated_ms) for i in read_item_jsonl(path, now_ms=9)]
[('a', 'shoes', True, {'size': '42'}, 9), ('b', None, False, {}, 5)]
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from producers.sources._files import existing_file, open_binary, open_text
from schemas.events import Item

__all__ = ["OBD_CATEGORY", "read_item_jsonl", "read_obd_items"]

#: The OBD item feature used as the category (hashed; 7 values for Men, 13 for All).
OBD_CATEGORY = "item_feature_1"
_ITEM_FIELDS = frozenset({"item_id", "category", "available", "attributes", "updated_ms"})


def read_obd_items(path: str | Path, *, now_ms: int) -> Iterator[Item]:
    """Yield one :class:`Item` per row of an OBD ``item_context.csv``, in file order."""
    return _read_obd(existing_file(path), now_ms)


def _read_obd(path: Path, now_ms: int) -> Iterator[Item]:
    with open_text(path) as lines:
        reader = csv.DictReader(lines)
        columns = reader.fieldnames or ()
        if "item_id" not in columns or OBD_CATEGORY not in columns:
            raise ValueError(f"{path}: not an OBD item_context.csv, need columns item_id and {OBD_CATEGORY}")
        features = [c for c in columns if c.startswith("item_feature_") and c != OBD_CATEGORY]
        for line_no, row in enumerate(reader, start=2):
            try:
                item_id = str(int(row["item_id"]))
                if any(row[c] is None for c in (OBD_CATEGORY, *features)):
                    raise ValueError(f"expected {len(columns)} columns")
            except (ValueError, TypeError) as exc:
                raise ValueError(f"{path}:{line_no}: {exc}") from None
            yield Item(item_id, now_ms, row[OBD_CATEGORY] or None, True, {c: row[c] for c in features})


def read_item_jsonl(path: str | Path, *, now_ms: int) -> Iterator[Item]:
    """Yield the :class:`Item` of each non-blank line of a JSON-lines file."""
    return _read_jsonl(existing_file(path), now_ms)


def _read_jsonl(path: Path, now_ms: int) -> Iterator[Item]:
    with open_binary(path) as lines:
        for line_no, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                item = item_of(orjson.loads(line), now_ms)
            except (orjson.JSONDecodeError, ValueError) as exc:
                raise ValueError(f"{path}:{line_no}: {exc}") from None
            yield item


def item_of(obj: Any, now_ms: int) -> Item:
    """Check one decoded JSON value and build its :class:`Item` (``ValueError`` says what is wrong).

    >>> item_of({"item_id": "x", "available": "no"}, now_ms=1)
    Traceback (most recent call last):
    ...
    ValueError: available must be true or false, got 'no'
    """
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - _ITEM_FIELDS)
    if unknown:
        raise ValueError(f"unknown fields {unknown}; an item has {sorted(_ITEM_FIELDS)}")
    item_id, category = obj.get("item_id"), obj.get("category")
    if not isinstance(item_id, str) or not item_id:
        raise ValueError(f"item_id must be a non-empty string, got {item_id!r}")
    if category is not None and not isinstance(category, str):
        raise ValueError(f"category must be a string or null, got {category!r}")
    available = obj.get("available", True)
    if not isinstance(available, bool):
        raise ValueError(f"available must be true or false, got {available!r}")
    updated_ms = obj.get("updated_ms", now_ms)
    if not isinstance(updated_ms, int) or isinstance(updated_ms, bool) or updated_ms < 0:
        raise ValueError(f"updated_ms must be a non-negative integer (ms since the epoch), got {updated_ms!r}")
    attributes = obj.get("attributes") or {}
    if not isinstance(attributes, dict) or any(isinstance(v, dict | list) or v is None for v in attributes.values()):
        raise ValueError(f"attributes must be an object of strings, numbers or booleans, got {attributes!r}")
    text = {k: (("true" if v else "false") if isinstance(v, bool) else str(v)) for k, v in attributes.items()}
    return Item(item_id, updated_ms, category, available, text)
