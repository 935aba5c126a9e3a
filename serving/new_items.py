"""New items from day one: a few slots of a model list go to catalogue items the model cannot score yet.

An item the job has learned no factors for is in no user's stored list, however well it would suit
them. Serving knows the catalogue (:mod:`serving.catalogue`: categories, availability) and which
items have factors (the similar-items index, :mod:`serving.similar`), so it can tell the new ones:
available, with a category, no factors. Per category it keeps the :data:`POOL` most recently
published (the catalogue entry's event time, ``updated_ms`` on the ``items`` topic), newest first,
in batches: the items published at the same time.

A user's taste is read from what serving already has: the open session's categories (its
items' catalogue categories, else the job's per-category event counts:
:func:`serving.rerank.session_shares`), what the user is looking at now; without an open session,
the categories of the items of the user's closed sessions (the job keeps the last ``HISTORY`` of them
in the user's value, ``flink_jobs/user_record.py``); failing both, those of the first :data:`DEPTH`
items of the user's stored list. Up to ``slots``
(``PULSE_SERVING_NEW_ITEM_SLOTS``, at most half the list) new items of the user's main categories
(those weighing at least half the top one, in turn) take evenly spread places in the list, pushing
the model's last items out. The newest batch goes first (until the model learns its items, then
the next one); each user starts at their own place in a batch (a stable hash), so the users of a
category spread over the items published together. New items pass the request's filters, the
catalogue's availability, the user's blocks and the diversity cap like any item; they keep the
score of the item above them (the list stays sorted) and have no ``explanation``. When the index
holds no factors at all (no model yet, or not read yet) nothing is new. Model lists only: the
popularity fallback is unchanged.

>>> categories = {"a": "shoes", "b": "shoes", "c": "hats", "d": "bags", "e": "shoes"}
>>> tastes = taste_categories(["a", "b", "c", "e"], {}, categories)
>>> tastes
['shoes']
>>> picks = pick_new_items("u1", tastes, {"shoes": (("n1", "n2"),), "bags": (("n3",),)}, lambda item: True, 2)
>>> picks
['n2', 'n1']
>>> place_new_items([("a", 3.0), ("b", 2.0), ("c", 1.0), ("e", 0.5), ("f", 0.4)], picks, 5)
[('a', 3.0), ('n2', 3.0), ('b', 2.0), ('n1', 2.0), ('c', 1.0)]
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

from serving.catalogue import Catalogue, CatalogueView
from serving.polling import poll_forever
from serving.similar import SimilarIndexView

__all__ = ["DEPTH", "POOL", "NewItems", "NewItemsView", "newest_by_category", "pick_new_items",
           "place_new_items", "taste_categories"]

log = logging.getLogger(__name__)

#: Items of the stored list whose categories make the user's taste.
DEPTH = 20
#: New items kept per category, newest first.
POOL = 10
#: Catalogue entries read per round trip (their event times).
PAGE = 500
#: A category's new items: batches (items published at the same time), newest first.
Pool = tuple[tuple[str, ...], ...]


def taste_categories(stored: Iterable[str], session: Mapping[str, float], categories: Mapping[str, str]) -> list[str]:
    """The user's main categories, heaviest first (ties by name): those weighing at least half the top one.

    ``session``: each category's share of the open session; when it has none, each item of
    ``stored`` counts 1 for its category (items without a category count nothing).

    >>> taste_categories(["a", "b"], {}, {"a": "x", "b": "y"}), taste_categories(["a"], {}, {})
    (['x', 'y'], [])
    >>> taste_categories(["a", "b", "c"], {"y": 0.7, "z": 0.3}, {"a": "x", "b": "x", "c": "x"})
    ['y']
    """
    weights: Counter[str] | Mapping[str, float] = session or Counter(
        category for category in (categories.get(item) for item in stored) if category is not None)
    if not weights:
        return []
    top = max(weights.values())
    return sorted((name for name, weight in weights.items() if 2 * weight >= top), key=lambda n: (-weights[n], n))


def pick_new_items(user_id: str, tastes: Sequence[str], pools: Mapping[str, Sequence[Sequence[str]]],
                   allows: Callable[[str], bool], slots: int) -> list[str]:
    """Up to ``slots`` new items, one from each of ``tastes`` in turn, from its pool's batches in order.

    Within a batch the user starts at their own place, a stable hash of user and category (the same
    on every worker and restart); an item ``allows`` refuses is passed over. Categories without
    pools are skipped.

    >>> pools = {"x": (("x1", "x2", "x3"), ("x0",)), "y": (("y1",),)}
    >>> pick_new_items("u7", ["x", "y"], pools, lambda item: True, 3)
    ['x1', 'y1', 'x2']
    >>> pick_new_items("u7", ["x", "y"], pools, lambda item: item != "x1", 4)
    ['x2', 'y1', 'x3', 'x0']
    >>> pick_new_items("u7", ["z"], pools, lambda item: True, 2)
    []
    """
    queues = {}
    for category in tastes:
        batches = pools.get(category) or ()
        if batches:
            start = zlib.crc32(f"{user_id}\x00{category}".encode())
            queues[category] = [item for batch in batches for item in (*batch[start % len(batch):],
                                                                       *batch[:start % len(batch)]) if allows(item)]
    picks: list[str] = []
    while len(picks) < slots and any(queues.values()):
        for category in tastes:
            queue = queues.get(category)
            if queue and len(picks) < slots:
                picks.append(queue.pop(0))
    return picks


def place_new_items(top: Sequence[tuple[str, float]], picks: Sequence[str], k: int) -> list[tuple[str, float]]:
    """``top`` with ``picks`` at evenly spread places, ``k`` items at most (the model's last ones give way).

    In a list of ``n`` items, pick ``j`` (of ``m``) lands at index ``(j + 1) * n // (m + 1)``, with
    the score of the item above it (the first place, with the list's top score).

    >>> place_new_items([("a", 2.0), ("b", 1.0)], ["n"], 2)
    [('a', 2.0), ('n', 2.0)]
    >>> place_new_items([], ["n1", "n2"], 5)
    [('n1', 0.0), ('n2', 0.0)]
    >>> place_new_items([("a", 1.0)], [], 3)
    [('a', 1.0)]
    """
    picks = list(picks)[:k]
    if not picks:
        return list(top[:k])
    size = min(k, len(top) + len(picks))
    model = iter(top[:size - len(picks)])
    at = {(j + 1) * size // (len(picks) + 1): item for j, item in enumerate(picks)}
    placed: list[tuple[str, float]] = []
    for index in range(size):
        if index in at:
            placed.append((at[index], placed[-1][1] if placed else (top[0][1] if top else 0.0)))
        else:
            placed.append(next(model))
    return placed


def newest_by_category(catalogue: Catalogue, learned: Iterable[str] | set[str],
                       published_ms: Mapping[str, int], pool: int = POOL) -> dict[str, Pool]:
    """Per category, the ``pool`` newest available catalogue items not in ``learned``, in batches newest first.

    A batch: the items published at the same time, by id.

    >>> catalogue = Catalogue(1, frozenset({"c"}), {"a": "x", "b": "x", "c": "x", "d": "y", "e": "x"})
    >>> newest_by_category(catalogue, {"d"}, {"a": 5, "b": 9, "e": 9})
    {'x': (('b', 'e'), ('a',))}
    >>> newest_by_category(catalogue, {"d"}, {"a": 5, "b": 9, "e": 9}, pool=1)
    {'x': (('b',),)}
    """
    known = learned if isinstance(learned, set) else set(learned)
    found: dict[str, list[str]] = {}
    for item, category in catalogue.categories.items():
        if item not in known and catalogue.allows(item):
            found.setdefault(category, []).append(item)
    pools = {}
    for category, items in sorted(found.items()):
        newest = sorted(items, key=lambda item: (-published_ms.get(item, 0), item))[:pool]
        pools[category] = tuple(tuple(batch) for _, batch in groupby(newest, key=lambda i: published_ms.get(i, 0)))
    return pools


@dataclass(frozen=True)
class NewItems:
    """One read of the new items: each category's pool and what it was built from."""

    pools: dict[str, Pool] = field(default_factory=dict)
    source: tuple[object, ...] = ()  # (catalogue prefix, version, index prefix, index read time)

    def shape(self, user_id: str, top: Sequence[tuple[str, float]], stored: Sequence[Any],
              session: Mapping[str, float], categories: Mapping[str, str], allows: Callable[[str], bool], slots: int,
              k: int, max_per_category: int | None = None) -> list[tuple[str, float]]:
        """``top`` (the served model list) with the user's new items placed (see the module docstring).

        ``stored``: the user's stored list as Redis holds it (``[item, score]`` pairs, best first).
        """
        slots = min(slots, k // 2)
        if slots <= 0 or not self.pools:
            return list(top)
        tastes = taste_categories((str(entry[0]) for entry in stored[:DEPTH]), session, categories)
        if not tastes:
            return list(top)
        served = {item for item, _ in top}
        per_category = Counter(categories.get(item) for item, _ in top)

        def fits(item: str) -> bool:
            if item in served or not allows(item):
                return False
            if max_per_category is None:
                return True
            category = categories.get(item)
            if per_category[category] >= max_per_category:  # counted on the whole list: any kept part holds the cap
                return False
            per_category[category] += 1  # a pick counts towards its category's cap
            return True

        return place_new_items(top, pick_new_items(user_id, tastes, self.pools, fits, slots), k)


class NewItemsView:
    """The newest :class:`NewItems` this process has built; :meth:`run` rebuilds it when its sources move."""

    def __init__(self, catalogue: CatalogueView, index: SimilarIndexView, slots: int, refresh_s: float) -> None:
        self.catalogue = catalogue
        self.index = index
        self.slots = slots
        self.refresh_s = refresh_s
        self.current = NewItems()
        self._published: dict[tuple[str, str], int] = {}  # (prefix, item) -> catalogue entry's event time

    async def refresh(self) -> bool:
        """Build the pools again if the catalogue or the factors index moved; whether it did."""
        catalogue, index = self.catalogue.current, self.index.current
        source = (catalogue.prefix, catalogue.version, index.prefix, index.read_at_ms)
        if source == self.current.source:
            return False
        if not len(index) or catalogue.prefix is None or index.prefix != catalogue.prefix:
            self.current = NewItems(source=source)  # no factors read (yet): nothing can be told new
            return True
        learned = set(index.rows)
        unlearned = [item for item in catalogue.categories if item not in learned and catalogue.allows(item)]
        await self._read_published(catalogue.prefix, unlearned)
        published = {item: self._published.get((catalogue.prefix, item), 0) for item in unlearned}
        self._published = {(catalogue.prefix, item): t for item, t in published.items()}  # learned ones leave
        self.current = NewItems(newest_by_category(catalogue, learned, published), source)
        log.debug("new items: %d categories, %d items without factors", len(self.current.pools), len(unlearned))
        return True

    async def _read_published(self, prefix: str, items: Sequence[str]) -> None:
        """The event times of the catalogue entries of ``items`` not read before (pages of :data:`PAGE`)."""
        store = self.catalogue.store
        missing = [item for item in items if (prefix, item) not in self._published]
        for start in range(0, len(missing), PAGE):
            page = missing[start:start + PAGE]
            envelopes = await store.read([store.keys.catalogue_item(item) for item in page])
            for item, envelope in zip(page, envelopes, strict=True):
                self._published[(prefix, item)] = envelope.event_time_ms if envelope is not None else 0
            await asyncio.sleep(0)  # let requests in between pages

    async def run(self) -> None:
        """Rebuild forever (a task of the app's lifespan)."""
        await poll_forever(self.refresh, self.refresh_s, "new items")
