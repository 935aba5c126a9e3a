"""Serving's copy of the catalogue the job keeps in Redis: which items are unavailable, each item's category.

The job writes every catalogue entry and, in the same script, the catalogue's indexes (an
``unavailable`` set, a ``category`` hash) and bumps their ``version`` (``flink_jobs/catalogue.py``,
ADR 0003 "The catalogue"). Serving polls the version every ``refresh_s`` in the background
(one ``GET``) and reads the indexes whole only when it moved, so a request filters against
memory, never against Redis: an item marked unavailable stops being served within about
``refresh_s`` after the job wrote it.

>>> catalogue = Catalogue(1, frozenset({"i2"}), {"i1": "shoes"})
>>> catalogue.allows("i1"), catalogue.allows("i2"), catalogue.category_of("i1")
(True, False, 'shoes')
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from serving.polling import poll_forever
from serving.store import RedisStore

__all__ = ["Catalogue", "CatalogueView", "ItemFilter"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Catalogue:
    """One version of the catalogue's indexes (version 0: none written yet, everything allowed)."""

    version: int = 0
    unavailable: frozenset[str] = frozenset()
    categories: dict[str, str] = field(default_factory=dict)
    prefix: str | None = None  # whose catalogue (the live prefix can change: serving/alias.py)

    def allows(self, item_id: str) -> bool:
        """Whether ``item_id`` may be served (unknown items may: the catalogue is optional)."""
        return item_id not in self.unavailable

    def category_of(self, item_id: str) -> str | None:
        """The item's category, if the catalogue names one."""
        return self.categories.get(item_id)


@dataclass(frozen=True)
class ItemFilter:
    """What one request may be served.

    No item of ``skip`` (the request's exclusions, the session's items), nothing the catalogue says
    is unavailable, and only items of ``categories`` (when given) and of no category in
    ``exclude_categories``. An item the catalogue gives no category has none.

    >>> only_shoes = ItemFilter(Catalogue(1, frozenset({"i3"}), {"i1": "shoes", "i3": "shoes"}),
    ...                         skip=frozenset({"i2"}), categories=frozenset({"shoes"}))
    >>> [item for item in ("i1", "i2", "i3", "i4") if only_shoes.allows(item)]
    ['i1']
    """

    catalogue: Catalogue
    skip: frozenset[str] = frozenset()
    categories: frozenset[str] | None = None
    exclude_categories: frozenset[str] = frozenset()

    @property
    def narrows(self) -> bool:
        """Whether it can drop items beyond the session's (then every stored score is a candidate)."""
        return bool(self.catalogue.unavailable or self.categories is not None or self.exclude_categories)

    def blocking(self, items: frozenset[str], categories: frozenset[str]) -> ItemFilter:
        """The same filter, also refusing what a user blocked: ``items`` and every item of ``categories``.

        >>> wanted = ItemFilter(Catalogue(1, frozenset(), {"i1": "shoes", "i2": "hats"})).blocking(
        ...     frozenset({"i3"}), frozenset({"hats"}))
        >>> [item for item in ("i1", "i2", "i3", "i4") if wanted.allows(item)]
        ['i1', 'i4']
        """
        if not items and not categories:
            return self
        return ItemFilter(self.catalogue, self.skip | items, self.categories, self.exclude_categories | categories)

    def skipping(self, items: Iterable[str]) -> ItemFilter:
        """The same filter, also refusing ``items`` (built directly: ``dataclasses.replace`` costs ~1.5 us)."""
        return ItemFilter(self.catalogue, self.skip.union(items), self.categories, self.exclude_categories)

    def allowed(self, ranked: Sequence[Sequence[Any]]) -> list[tuple[str, float]]:
        """The ``(item, score)`` pairs of ``ranked`` that :meth:`allows`, in order (one pass, no call per item).

        >>> ItemFilter(Catalogue(1, frozenset({"i2"}), {"i3": "hats"}), exclude_categories=frozenset({"hats"})).allowed(
        ...     [["i1", 3], ["i2", 2], ["i3", 1], ["i4", 0]])
        [('i1', 3.0), ('i4', 0.0)]
        """
        if not all(type(item) is str for item, _ in ranked):  # ids stored as something else: read as text
            ranked = [(str(item), score) for item, score in ranked]
        skip, unavailable = self.skip, self.catalogue.unavailable
        if self.categories is None and not self.exclude_categories:
            return [(str(item), float(score)) for item, score in ranked
                    if item not in skip and item not in unavailable]
        of, only, left_out = self.catalogue.categories.get, self.categories, self.exclude_categories
        return [(str(item), float(score)) for item, score in ranked
                if item not in skip and item not in unavailable
                and (only is None or of(item) in only) and of(item) not in left_out]

    def allows(self, item_id: str) -> bool:
        """Whether ``item_id`` may be served."""
        if item_id in self.skip or item_id in self.catalogue.unavailable:
            return False
        if self.categories is None and not self.exclude_categories:
            return True
        category = self.catalogue.categories.get(item_id)
        if self.categories is not None and category not in self.categories:
            return False
        return category not in self.exclude_categories


class CatalogueView:
    """The newest :class:`Catalogue` this process has read; :meth:`run` keeps it current."""

    def __init__(self, store: RedisStore, refresh_s: float) -> None:
        self.store = store
        self.refresh_s = refresh_s
        self.current = Catalogue()

    async def refresh(self) -> bool:
        """Read the indexes again if their version moved; whether it did."""
        prefix = self.store.keys.prefix
        version = await self.store.catalogue_version()
        if (prefix, version) == (self.current.prefix, self.current.version):
            return False
        unavailable, categories = await self.store.catalogue_indexes()
        # The version is read first: a change landing in between shows up on the next poll.
        self.current = Catalogue(version, frozenset(unavailable), categories, prefix)
        log.info("catalogue of %r version %d: %d unavailable, %d with a category", prefix, version,
                 len(unavailable), len(categories))
        return True

    async def run(self) -> None:
        """Poll forever (a task of the app's lifespan)."""
        await poll_forever(self.refresh, self.refresh_s, "catalogue")
