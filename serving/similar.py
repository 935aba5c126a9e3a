"""Similar items: the items whose factors point the way one item's do (cosine), from an in-process index.

The job writes each item's bias and factors to Redis (``RedisKeys.item_record``, format 2; format 1
``item_params`` hashes are read too when ``legacy_reads`` is on). Serving never computes over Redis
per request: :class:`SimilarIndexView` reads every item record every ``refresh_s`` in the background
(the job lists them in a set, ``RedisKeys.learned_items``: no ``SCAN`` of a keyspace that holds
every user's keys too) and keeps the factors as one matrix of unit rows (:class:`ItemIndex`). The
first request for an item after a read ranks its best rows (one matrix-vector product and a
partial sort), later ones walk those; the catalogue (availability, categories), the request's
filters and the user's blocks apply then, against memory, so an item marked unavailable leaves
similar lists as fast as it leaves recommendations (the catalogue's refresh), while a brand-new
item is found from the next index read on.

>>> index = ItemIndex.build({"a": [1.0, 0.0], "b": [0.9, 0.1], "c": [0.0, 1.0], "d": [-1.0, 0.0]})
>>> [(item, round(similarity, 3)) for item, similarity in index.similar("a", 2)]
[('b', 0.994), ('c', 0.0)]
>>> index.similar("a", 2, allows=lambda item: item != "b")
[('c', 0.0), ('d', -1.0)]
>>> index.similar("zz", 2) is None
True
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from schemas.redis_keys import Envelope, item_id_of_key
from schemas.redis_values import decode_item_value
from serving.catalogue import Catalogue, ItemFilter
from serving.models import SimilarItem, SimilarItems
from serving.polling import poll_forever
from serving.store import RedisStore

__all__ = ["ItemIndex", "Ranked", "SimilarIndexView", "most_similar", "ranked_slice", "similar_items"]

log = logging.getLogger(__name__)

Matrix = npt.NDArray[np.float32]
#: Keys per SCAN page and per GET round trip: small enough that decoding one page never holds the event loop long.
PAGE = 500
#: Rows ranked per asked-for item (more when a request's k needs them), and items ranked per index at most.
RANKED = 256
MAX_RANKED = 20_000


def most_similar(
    unit: Matrix, row: int, k: int, allows: Callable[[int], bool] | None = None, first: Ranked | None = None
) -> list[tuple[int, float]]:
    """The ``k`` rows of ``unit`` most similar to ``row`` (cosine of unit rows), best first, ``row`` itself excluded.

    Only rows ``allows`` accepts count; candidates are taken best first in growing slices, so the
    answer holds ``k`` rows whenever that many are allowed. Ties go to the lower row. ``first``:
    the best rows already ranked (:func:`ranked_slice`), walked before anything is computed.

    >>> unit = np.array([[1, 0], [0.6, 0.8], [0, 1], [0.8, 0.6]], dtype=np.float32)
    >>> [(row, round(cos, 2)) for row, cos in most_similar(unit, 0, 2)]
    [(3, 0.8), (1, 0.6)]
    >>> [row for row, _ in most_similar(unit, 0, 5, allows=lambda row: row != 3)]
    [1, 2]
    >>> most_similar(unit, 0, 2, first=ranked_slice(unit, 0, 2)) == most_similar(unit, 0, 2)
    True
    """
    n = unit.shape[0]
    if k <= 0 or n <= 1:
        return []
    taken = first_slice(n, k)
    if first is not None and len(first.rows) >= taken:
        found = _walk(first, row, k, allows)
        if len(found) == k or len(first.rows) >= n:
            return found
        taken = min(n, len(first.rows) * 4)
    while True:
        found = _walk(ranked_slice(unit, row, taken), row, k, allows)
        if len(found) == k or taken >= n:
            return found
        taken = min(n, taken * 4)


def first_slice(n: int, k: int) -> int:
    """How many of ``n`` rows a request for ``k`` ranks first (room for some to fail its filters)."""
    return min(n, 2 * k + 16)


@dataclass(frozen=True)
class Ranked:
    """The rows most similar to one row, best first (by similarity, then row), and their similarities."""

    rows: tuple[int, ...]
    similarities: tuple[float, ...]


def ranked_slice(unit: Matrix, row: int, taken: int) -> Ranked:
    """The ``taken`` rows of ``unit`` most similar to ``row`` (itself last, if at all), best first."""
    n = unit.shape[0]
    similarity = unit @ unit[row]
    similarity[row] = -np.inf  # never the item itself
    if taken < n:
        best = np.argpartition(similarity, n - taken)[n - taken:]  # the ``taken`` largest
        # argpartition leaves its slice unordered: stable order by (-similarity, row) for repeatable answers.
        best = best[np.lexsort((best, -similarity[best]))]
    else:
        best = np.lexsort((np.arange(n), -similarity))
    return Ranked(tuple(best.tolist()), tuple(similarity[best].tolist()))


def _walk(ranked: Ranked, row: int, k: int, allows: Callable[[int], bool] | None) -> list[tuple[int, float]]:
    found: list[tuple[int, float]] = []
    for candidate, similarity in zip(ranked.rows, ranked.similarities, strict=True):
        if candidate != row and (allows is None or allows(candidate)):
            found.append((candidate, similarity))
            if len(found) == k:
                break
    return found


@dataclass(frozen=True)
class ItemIndex:
    """One read of every item's factors: ids by row and the factors as unit rows (a zero vector stays zero)."""

    items: tuple[str, ...] = ()
    unit: Matrix = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    versions: tuple[str, ...] = ()  # the model version that wrote each row
    rows: dict[str, int] = field(default_factory=dict)
    prefix: str | None = None  # whose items (the live prefix can change: serving/alias.py)
    read_at_ms: int = 0  # when the read started (0: never read)
    dropped: int = 0  # items whose factors had another length than most (a model being replaced)
    #: Each asked-for row's best rows, ranked once per index (a read of the factors): a request then
    #: walks them past its filters instead of a product over every item and a partial sort.
    ranked: dict[int, Ranked] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def build(cls, factors: Mapping[str, Sequence[float] | Matrix], versions: Mapping[str, str] | None = None,
              prefix: str | None = None, read_at_ms: int = 0) -> ItemIndex:
        """The index of ``factors`` (item -> factors); items whose length differs from the most common are dropped."""
        lengths = Counter(len(vector) for vector in factors.values())
        if not lengths:
            return cls(prefix=prefix, read_at_ms=read_at_ms)
        dimension = lengths.most_common(1)[0][0]
        items = tuple(sorted(item for item, vector in factors.items() if len(vector) == dimension))
        matrix = np.array([factors[item] for item in items], dtype=np.float32).reshape(len(items), dimension)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        unit = np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)
        named = versions or {}
        return cls(items, unit, tuple(named.get(item, "") for item in items),
                   {item: row for row, item in enumerate(items)}, prefix, read_at_ms, len(factors) - len(items))

    def __len__(self) -> int:
        return len(self.items)

    def version_of(self, item_id: str) -> str | None:
        """The model version of the item's factors, if indexed."""
        row = self.rows.get(item_id)
        return None if row is None or not self.versions[row] else self.versions[row]

    def similar(
        self, item_id: str, k: int, allows: Callable[[str], bool] | None = None
    ) -> list[tuple[str, float]] | None:
        """The ``k`` items most similar to ``item_id`` that ``allows`` accepts; ``None`` when it has no factors here."""
        row = self.rows.get(item_id)
        if row is None:
            return None
        items = self.items
        by_row = None if allows is None else (lambda candidate: allows(items[candidate]))
        first = self.ranked.get(row)
        wanted = first_slice(len(items), k)
        if first is None or len(first.rows) < wanted:
            first = ranked_slice(self.unit, row, max(wanted, min(len(items), RANKED)))
            if len(self.ranked) >= MAX_RANKED:
                self.ranked.clear()  # bounded memory; the busy items are ranked again at once
            self.ranked[row] = first
        return [(items[found], similarity) for found, similarity in most_similar(self.unit, row, k, by_row, first)]


def _decoded(key: str, data: Any, legacy: bool) -> Envelope | None:
    """An item's value as :meth:`RedisStore.read_raw` answered it (``GET``, or ``HGETALL`` for format 1).

    A value that is no item record is skipped with a warning: one bad key must not empty the index.
    """
    try:
        if legacy:
            return Envelope.from_fields_or_none(dict(zip(data[::2], data[1::2], strict=True))
                                                if isinstance(data, list) else data or {})
        return None if data is None else decode_item_value(data)
    except ValueError as exc:
        log.warning("similar items: %s is not an item record (%s); skipped", key, exc)
        return None


class SimilarIndexView:
    """The newest :class:`ItemIndex` this process has read; :meth:`run` keeps it current."""

    def __init__(self, store: RedisStore, refresh_s: float, clock_ms: Callable[[], int] | None = None) -> None:
        self.store = store
        self.refresh_s = refresh_s
        self.clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self.current = ItemIndex()
        self._read_at = -float("inf")  # monotonic time of the last full read
        self._scanned: set[str] = set()  # prefixes read by SCAN (warned once each)

    async def refresh(self) -> bool:
        """Read every item's factors again if ``refresh_s`` passed or the live prefix moved; whether it did."""
        prefix = self.store.keys.prefix
        if prefix == self.current.prefix and time.monotonic() - self._read_at < self.refresh_s:
            return False
        started_ms, started = self.clock_ms(), time.monotonic()
        factors, versions = await self._read(prefix)
        self.current = ItemIndex.build(factors, versions, prefix, started_ms)
        self._read_at = started
        log.debug("similar-items index of %r: %d items (%d of another length) in %.2f s", prefix,
                  len(self.current), self.current.dropped, time.monotonic() - started)
        return True

    async def _read(self, prefix: str) -> tuple[dict[str, Matrix], dict[str, str]]:
        """Every item's factors and model version under ``prefix`` (format 2 wins over format 1)."""
        store, keys = self.store, self.store.keys
        factors: dict[str, Matrix] = {}  # float32 from the start: a Python float per factor would be 8x the memory
        versions: dict[str, str] = {}
        legacy: set[str] = set()
        seen_versions: dict[str, str] = {}  # one string object per model version
        async for found in self._item_pages(prefix):
            commands = [("GET", keys.item_record(item)) if compact else ("HGETALL", keys.item_params(item))
                        for item, compact in found]
            replies = await store.read_raw(commands)
            for (item_id, compact), (_, key), reply in zip(found, commands, replies, strict=True):
                envelope = _decoded(key, reply, not compact)
                if envelope is None or (not compact and item_id in factors and item_id not in legacy):
                    continue  # deleted since it was listed, or format 1 where format 2 was read
                vector = envelope.payload.get("factors")
                if not isinstance(vector, list):
                    continue
                factors[item_id] = np.asarray(vector, dtype=np.float32)
                versions[item_id] = seen_versions.setdefault(envelope.model_version, envelope.model_version)
                (legacy.add if not compact else legacy.discard)(item_id)
            await asyncio.sleep(0)  # let requests in between pages
        return factors, versions

    async def _item_pages(self, prefix: str) -> AsyncIterator[list[tuple[str, bool]]]:
        """Pages of ``(item id, format 2)`` to read: the job's set of learned items (``SSCAN``).

        A Redis written by a job older than that set has none: its item keys are found by a ``SCAN``
        of the whole keyspace (users' keys too), as before, with one warning per prefix.
        """
        store = self.store
        cursor: int | None = None
        while cursor != 0:
            page = await store.set_page(store.keys.learned_items(), cursor or 0, PAGE)
            if page is None:
                break
            cursor, members = page
            found = [(item, True) for item in members]
            yield found + [(item, False) for item in members] if store.legacy_reads else found
        else:
            return
        cursor, listed = None, 0
        while cursor != 0:
            cursor, names = await store.scan(f"{prefix}:item:{{*", cursor or 0, PAGE)
            found = [parsed for parsed in (item_id_of_key(name, prefix) for name in names)
                     if parsed is not None and (parsed[1] or store.legacy_reads)]
            listed += len(found)
            yield found
        if listed and prefix not in self._scanned:  # none: nothing learned yet, nothing to warn of
            self._scanned.add(prefix)
            log.warning("similar items: %d item keys under %r but no set %s (written by a job before it): read "
                        "by a SCAN of the whole keyspace, every %s s; `pulse model index-items` writes the set",
                        listed, prefix, store.keys.learned_items(), self.refresh_s)

    async def run(self) -> None:
        """Refresh forever (a task of the app's lifespan); the prefix is checked every second at most."""
        await poll_forever(self.refresh, min(self.refresh_s, 1.0), "similar items")



async def similar_items(
    view: SimilarIndexView, catalogue: Catalogue, item_id: str, k: int, *, user_id: str | None = None,
    exclude: Sequence[str] = (), categories: Sequence[str] = (), exclude_categories: Sequence[str] = (),
) -> SimilarItems | None:
    """The ``k`` items most similar to ``item_id`` that may be served; ``None`` when the index has no factors for it.

    Never an unavailable item (``catalogue``), one of ``exclude``, one outside ``categories`` (when
    given) or inside ``exclude_categories``, nor, with a ``user_id``, one that user blocked or of a
    category the user blocked (read from Redis: one round trip).
    """
    index = view.current
    if item_id not in index.rows:
        return None
    wanted = ItemFilter(catalogue, frozenset(exclude), frozenset(categories) if categories else None,
                        frozenset(exclude_categories))
    if user_id is not None:
        wanted = wanted.blocking(*await view.store.blocked(user_id))
    found = index.similar(item_id, k, wanted.allows if wanted.narrows or wanted.skip else None) or []
    return SimilarItems(item_id=item_id, model_version=index.version_of(item_id), indexed_at_ms=index.read_at_ms,
                        items=[SimilarItem(item_id=item, similarity=similarity) for item, similarity in found])
