"""Catalogue sources for the compacted ``items`` topic, chosen by a short spec string.

============================  ==========================================================
``synthetic``                 the synthetic world's items (:mod:`producers.catalogue.synthetic`)
``synthetic:users=1000,...``  the same world as ``pulse produce synthetic:users=1000,...``
``obd:PATH``                  Open Bandit Dataset ``item_context.csv``
``jsonl:PATH``                one JSON object per line with the fields of :class:`Item`
============================  ==========================================================

>>> items = list(open_catalogue("synthetic:users=30,items=100,categories=4", seed=1, new_items=2))
>>> len(items), items[0].item_id, items[-1].item_id, {i.category for i in items} == {"c0", "c1", "c2", "c3"}
(102, 'i0', 'i101', True)
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

from producers.catalogue.files import read_item_jsonl, read_obd_items
from producers.catalogue.synthetic import synthetic_catalogue, user_tastes
from producers.sources import parse_synthetic_overrides
from schemas.events import Item

__all__ = ["CATALOGUE_HELP", "CATALOGUE_SCHEMES", "open_catalogue", "synthetic_catalogue", "user_tastes"]

CATALOGUE_SCHEMES = ("synthetic", "obd", "jsonl")

CATALOGUE_HELP = """\
Catalogue source (with --topic items), one of:
  synthetic[:K=V,...]   the synthetic world's items, same ids and categories as the events of
                        `pulse produce synthetic:K=V,...` with the same options and --seed
                        (+ --new-items, --unavailable)
  obd:PATH              Open Bandit Dataset item_context.csv (category = item_feature_1)
  jsonl:PATH            one JSON object per line: item_id, category, available, attributes, updated_ms"""


def open_catalogue(
    spec: str, *, seed: int = 7, new_items: int = 0, unavailable: int = 0, now_ms: int | None = None
) -> Iterator[Item]:
    """Open the catalogue source named by ``spec`` (see :data:`CATALOGUE_HELP`).

    ``new_items`` and ``unavailable`` apply to the synthetic source only; file entries without a
    time of change get ``now_ms`` (default: now). Unknown schemes and bad options raise
    :class:`ValueError`, missing files :class:`FileNotFoundError`, both before the first item.

    >>> open_catalogue("movielens:u.item")
    Traceback (most recent call last):
    ...
    ValueError: unknown catalogue source 'movielens' in 'movielens:u.item'; valid: synthetic, obd, jsonl
    """
    scheme, _, arg = spec.strip().partition(":")
    scheme = scheme.strip().lower()
    if scheme == "synthetic":
        config = parse_synthetic_overrides(arg, seed=seed)
        return synthetic_catalogue(config, new_items=new_items, unavailable=unavailable)
    if scheme not in CATALOGUE_SCHEMES:
        raise ValueError(f"unknown catalogue source {scheme!r} in {spec!r}; valid: {', '.join(CATALOGUE_SCHEMES)}")
    if new_items or unavailable:
        raise ValueError("--new-items and --unavailable apply to the synthetic catalogue only")
    if not arg.strip():
        raise ValueError(f"catalogue source {scheme!r} needs a path: {scheme}:PATH")
    path = Path(arg.strip()).expanduser()
    stamp = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    return read_obd_items(path, now_ms=stamp) if scheme == "obd" else read_item_jsonl(path, now_ms=stamp)
