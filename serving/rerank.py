"""Shaping a ranked list after the filters: the session re-rank and the per-category diversity cap.

Pure functions over ``(item_id, score)`` pairs, best first (what :mod:`serving.recommendations`
has once the filters ran); categories come from the catalogue (:class:`~serving.catalogue.Catalogue`).

* **Session re-rank** (:func:`session_rerank`): an item whose category the open session has
  visited gets ``boost x share`` added to its score, ``share`` being that category's part of the
  session's items (:func:`session_shares`); the list is sorted again (ties keep the model's order).
  A session spent on shoes lifts shoes; a session split between shoes and bags lifts both, less.
* **Diversity cap** (:func:`cap_per_category`): at most ``n`` items of one category, walking down
  the list until ``k`` are taken. Items the catalogue gives no category are exempt (the cap limits
  the categories a shop named; with no catalogue at all, it changes nothing).

>>> categories = {"a": "shoes", "b": "bags", "c": "shoes", "d": "shoes"}
>>> shares = session_shares(["x", "c"], {}, categories)
>>> shares
{'shoes': 1.0}
>>> session_rerank([("b", 4.0), ("a", 3.8), ("d", 3.0)], shares, categories, 0.5)
[('a', 4.3), ('b', 4.0), ('d', 3.5)]
>>> cap_per_category([("a", 4.0), ("c", 3.9), ("d", 3.8), ("b", 3.7), ("e", 3.6)], categories, 1, 3)
[('a', 4.0), ('b', 3.7), ('e', 3.6)]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

__all__ = ["boost_of", "cap_per_category", "session_rerank", "session_shares"]

Ranked = list[tuple[str, float]]


def session_shares(recent_items: Iterable[str], session_categories: Mapping[str, int],
                   categories: Mapping[str, str]) -> dict[str, float]:
    """Each category's share of the open session: of its recent items' catalogue categories.

    When the catalogue names none of them, the job's own per-category event counts of the session
    (``categories``: the events' ``context.category``) stand in.

    >>> session_shares(["i1", "i2", "i3", "i4"], {}, {"i1": "shoes", "i2": "shoes", "i3": "bags"})
    {'shoes': 0.6666666666666666, 'bags': 0.3333333333333333}
    >>> session_shares(["i9"], {"books": 3, "films": 1}, {})
    {'books': 0.75, 'films': 0.25}
    >>> session_shares([], {}, {})
    {}
    """
    counts: dict[str, int] = {}  # a plain dict: a Counter cost ~8 % of a request's server CPU (py-spy)
    for item in recent_items:
        category = categories.get(item)
        if category is not None:
            counts[category] = counts.get(category, 0) + 1
    if not counts:
        counts = {name: int(n) for name, n in session_categories.items() if int(n) > 0}
    total = sum(counts.values())
    return {name: n / total for name, n in counts.items()} if total else {}


def session_rerank(candidates: Sequence[tuple[str, float]], shares: Mapping[str, float],
                   categories: Mapping[str, str], boost: float) -> Ranked:
    """``candidates`` with ``boost x share`` of its category added to each score, best first again.

    Stable: items with equal new scores keep their order. ``boost`` 0 or no shares: unchanged.

    >>> session_rerank([("a", 2.0), ("b", 1.0)], {"bags": 1.0}, {"b": "bags"}, 0.0)
    [('a', 2.0), ('b', 1.0)]
    """
    if boost <= 0 or not shares:
        return list(candidates)
    boosted = [(item, score + boost * shares.get(categories.get(item, ""), 0.0)) for item, score in candidates]
    boosted.sort(key=lambda pair: -pair[1])
    return boosted


def boost_of(item: str, shares: Mapping[str, float], categories: Mapping[str, str], boost: float) -> float:
    """What :func:`session_rerank` adds to ``item``'s score (shown in ``explain``).

    >>> boost_of("a", {"shoes": 0.5}, {"a": "shoes"}, 0.4), boost_of("b", {"shoes": 0.5}, {}, 0.4)
    (0.2, 0.0)
    """
    return boost * shares.get(categories.get(item, ""), 0.0) if boost > 0 else 0.0


def cap_per_category(ranked: Iterable[tuple[str, float]], categories: Mapping[str, str],
                     max_per_category: int | None, k: int) -> Ranked:
    """The first ``k`` items of ``ranked`` with at most ``max_per_category`` of each category.

    An item over its category's cap is skipped and the walk goes on down the list, so the answer
    has ``k`` items whenever ``ranked`` has that many within the cap. Items without a category
    are not capped. ``max_per_category`` None: the first ``k``.

    >>> cap_per_category([("a", 3.0), ("b", 2.0)], {}, None, 1)
    [('a', 3.0)]
    """
    taken: Ranked = []
    if k <= 0:
        return taken
    per_category: dict[str, int] = {}
    for item, score in ranked:
        if max_per_category is not None:
            category = categories.get(item)
            if category is not None:
                seen = per_category.get(category, 0)
                if seen >= max_per_category:
                    continue
                per_category[category] = seen + 1
        taken.append((item, score))
        if len(taken) >= k:
            break
    return taken
