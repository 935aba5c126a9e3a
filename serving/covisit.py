"""Similar items by co-visitation ("also viewed"): the lists ``pulse covisit --write`` stored, filtered per request.

``pulse covisit`` learns :class:`~online_models.covisit.CoVisitation` from an event source and
writes each item's partners, best first with their weighted counts, to ``RedisKeys.covisit``
(an envelope: ``{"items": [[item, count], ...], "window_ms": ...}``). A request reads the item's list
(one round trip, with the user's blocks when ``user_id`` is given) and applies the catalogue, the
filters and the blocks as for factor-based similar items (:mod:`serving.similar`).

>>> from serving.catalogue import Catalogue, ItemFilter
>>> allowed_partners([["b", 3.0], ["c", 2.0], ["d", 1.0]], ItemFilter(Catalogue(1, frozenset({"c"}))), "a", 2)
[('b', 3.0), ('d', 1.0)]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from serving.catalogue import Catalogue, ItemFilter
from serving.models import SimilarItem, SimilarItems
from serving.store import RedisStore

__all__ = ["allowed_partners", "covisited_items"]


def allowed_partners(partners: Sequence[Any], wanted: ItemFilter, item_id: str, k: int) -> list[tuple[str, float]]:
    """The first ``k`` stored ``[item, count]`` pairs ``wanted`` allows, never ``item_id`` itself."""
    found: list[tuple[str, float]] = []
    for other, count in partners:
        name = str(other)
        if name != item_id and wanted.allows(name):
            found.append((name, float(count)))
            if len(found) >= k:
                break
    return found


async def covisited_items(
    store: RedisStore, catalogue: Catalogue, item_id: str, k: int, *, user_id: str | None = None,
    exclude: Sequence[str] = (), categories: Sequence[str] = (), exclude_categories: Sequence[str] = (),
) -> SimilarItems | None:
    """The ``k`` items most co-visited with ``item_id`` that may be served; ``None`` when no list is stored for it."""
    (envelope,) = await store.read([store.keys.covisit(item_id)])
    if envelope is None:
        return None
    wanted = ItemFilter(catalogue, frozenset(exclude), frozenset(categories) if categories else None,
                        frozenset(exclude_categories))
    if user_id is not None:
        wanted = wanted.blocking(*await store.blocked(user_id))
    found = allowed_partners(envelope.payload.get("items") or [], wanted, item_id, k)
    return SimilarItems(item_id=item_id, method="covisit", model_version=envelope.model_version,
                        indexed_at_ms=envelope.write_time_ms,
                        items=[SimilarItem(item_id=item, similarity=count) for item, count in found])
