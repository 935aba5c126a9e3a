"""Recommendations: the live top-k of a user, or the decayed popularity of a segment for cold users.

Scores are the job's; this module only filters (the session's items, unavailable items of the
catalogue: :mod:`serving.catalogue`, the user's blocks), re-ranks by the session and caps
categories (:mod:`serving.rerank`), gives new items a few places (:mod:`serving.new_items`),
truncates, explains and falls back. The
response is built as plain data (:class:`RecommendationsBody`, exactly the fields of
:class:`~serving.models.Recommendations`, which documents it) and serialised with orjson: the hot
path skips constructing and re-validating a pydantic model per item
(``tests/unit/serving/test_recommendations.py`` checks both give the same JSON). The
explanation recomputes the score from the user's factors and the items' parameters as they are
in Redis now: its parts sum to ``total``, which equals the stored score while neither moved since
the scores were written.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, NotRequired, TypedDict

from online_models.popularity import ALL
from schemas.redis_keys import Envelope
from serving.catalogue import Catalogue, CatalogueView, ItemFilter
from serving.models import Explanation, Source
from serving.new_items import NewItemsView
from serving.request_ids import random_hex
from serving.rerank import boost_of, cap_per_category, session_rerank, session_shares
from serving.store import RedisStore, StoreUnavailableError

__all__ = ["PopularityCache", "RecommendationsBody", "Recommender", "now_ms"]


class ItemBody(TypedDict):
    """One :class:`~serving.models.RecommendedItem` as plain data."""

    item_id: str
    score: float
    explanation: dict[str, Any] | None


class RecommendationsBody(TypedDict):
    """A :class:`~serving.models.Recommendations` as plain data (same fields, same order)."""

    user_id: str
    source: str
    model_version: str | None
    event_time_ms: int | None
    freshness_ms: int | None
    segment: str | None
    degraded: bool
    items: list[ItemBody]
    request_id: NotRequired[str]  # set last by Recommender.recommend, with the experiment and variant
    experiment: NotRequired[str | None]
    variant: NotRequired[str | None]


class _CacheEntry(NamedTuple):
    """A cached popularity read and the monotonic time it was stored."""

    stored_at: float
    envelope: Envelope


def now_ms() -> int:
    """Wall-clock milliseconds."""
    return time.time_ns() // 1_000_000


class PopularityCache:
    """The last popularity read per segment, served for ``ttl_s`` when Redis is down.

    >>> cache = PopularityCache(ttl_s=60.0, clock=lambda: 0.0)
    >>> cache.put("*", Envelope({"items": []}, 1, 2, "mf-v1"))
    >>> cache.get("*").model_version, cache.get("men")
    ('mf-v1', None)
    """

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._entries: dict[str, _CacheEntry] = {}

    def put(self, segment: str, envelope: Envelope) -> None:
        """Remember the newest popularity of ``segment``."""
        self._entries[segment] = _CacheEntry(self._clock(), envelope)

    def get(self, segment: str) -> Envelope | None:
        """The cached popularity of ``segment`` if younger than the ttl."""
        entry = self._entries.get(segment)
        if entry is None or self._clock() - entry.stored_at > self.ttl_s:
            return None
        return entry.envelope


@dataclass(frozen=True)
class Shape:
    """How one request reorders and thins its eligible items (:mod:`serving.rerank`).

    ``shares``: each category's part of the user's open session (filled once the session is read).
    """

    boost: float = 0.0
    max_per_category: int | None = None
    shares: dict[str, float] = field(default_factory=dict)
    taste: dict[str, float] = field(default_factory=dict)  # category shares of the session (or past ones): new items

    def seeing(self, shares: dict[str, float], taste: dict[str, float]) -> Shape:
        """The same shape with the session's ``shares`` and ``taste`` (built directly: ``replace`` costs ~1.5 us)."""
        return Shape(self.boost, self.max_per_category, shares, taste)

    @property
    def whole_list(self) -> bool:
        """Whether the answer can come from deeper in the stored list than its first ``k`` eligible items."""
        return self.boost > 0 or self.max_per_category is not None

    def apply(self, eligible: list[tuple[str, float]], categories: dict[str, str], k: int,
              rerank: bool = True) -> list[tuple[str, float]]:
        """The ``k`` items served from ``eligible`` (best first): re-ranked (``rerank``), then capped."""
        if rerank:
            eligible = session_rerank(eligible, self.shares, categories, self.boost)
        return cap_per_category(eligible, categories, self.max_per_category, k)


def _segments(segment: str | None) -> list[str]:
    return [segment, ALL] if segment and segment != ALL else [ALL]


def _decayed(payload: dict[str, Any], at_ms: int) -> list[tuple[str, float]]:
    """Popularity scores decayed from the time they were written to ``at_ms``."""
    half_life = float(payload.get("half_life_ms") or 0)
    written = payload.get("at_ms")
    age = at_ms - int(written) if written is not None else 0
    factor = 0.5 ** (age / half_life) if half_life > 0 and age > 0 else 1.0
    return [(str(item), float(score) * factor) for item, score in payload.get("items", [])]


class Recommender:
    """Builds :class:`RecommendationsBody` from the store (and the cache when Redis is down)."""

    def __init__(
        self, store: RedisStore, cache: PopularityCache | None = None, clock_ms: Callable[[], int] = now_ms,
        catalogue: CatalogueView | None = None, *, blocks: bool = False, session_boost: float = 0.0,
        new_items: NewItemsView | None = None,
    ) -> None:
        self.store = store
        self.cache = cache
        self.clock_ms = clock_ms
        self.catalogue = catalogue  # unavailable items are never served
        self.blocks = blocks  # read the user's blocked items with the user (stores built by hand may not have them)
        self.session_boost = session_boost  # the default of a request's session re-rank (0: off)
        self.new_items = new_items  # places for items the model cannot score yet (None: off)

    async def recommend(
        self, user_id: str, k: int, *, exclude_seen: bool = True, explain: bool = False, segment: str | None = None,
        exclude: Sequence[str] = (), categories: Sequence[str] = (), exclude_categories: Sequence[str] = (),
        policy: str = "mf", experiment: str | None = None, variant: str | None = None,
        session_boost: float | None = None, max_per_category: int | None = None,
    ) -> RecommendationsBody:
        """The user's top-k from the model, else the popularity of ``segment`` (fallback ``*``).

        ``policy`` ``popularity`` (an experiment's variant) serves the popularity even when the
        model has scores for the user; ``experiment`` and ``variant`` are echoed in the body.

        Never an item of ``exclude``, an unavailable one (the catalogue), one outside ``categories``
        (when given) or inside ``exclude_categories``, nor one the user blocked or of a category the user
        blocked (the model's list and the popularity fallback alike). ``session_boost``
        (default: the recommender's) lifts the open session's categories; ``max_per_category`` caps
        each category (:mod:`serving.rerank`). A fresh ``request_id`` names the answer: a
        front-end sends it back on the events it leads to.
        """
        wanted = ItemFilter(self.catalogue.current if self.catalogue is not None else Catalogue(),
                            frozenset(exclude), frozenset(categories) if categories else None,
                            frozenset(exclude_categories))
        shape = Shape(self.session_boost if session_boost is None else session_boost, max_per_category)
        body = await self._recommend(user_id, k, exclude_seen, explain, segment, wanted, shape,
                                     policy != "popularity")
        body["request_id"] = random_hex(32)  # as a decision's (uuid4().hex cost ~4 % of a request)
        body["experiment"] = experiment
        body["variant"] = variant
        return body

    async def _recommend(
        self, user_id: str, k: int, exclude_seen: bool, explain: bool, segment: str | None, wanted: ItemFilter,
        shape: Shape, use_model: bool = True,
    ) -> RecommendationsBody:
        try:
            # With items to filter out or a list to reshape, every stored score is a candidate (k kept).
            top = None if wanted.narrows or shape.whole_list else k + len(wanted.skip)
            if self.blocks:
                recs, session, blocked, blocked_categories = await self.store.user_view_blocked(user_id, top=top)
                wanted = wanted.blocking(blocked, blocked_categories)
            else:
                recs, session = await self.store.user_view(user_id, top=top)
        except StoreUnavailableError:
            cached = self._cached(segment)
            if cached is None:
                raise
            cached_segment, cached_envelope = cached
            return self._popularity(user_id, k, cached_segment, cached_envelope, wanted, shape, degraded=True)
        if session is not None and session.payload.get("open"):
            recent = [str(item) for item in session.payload.get("recent_items", [])]
            if exclude_seen:
                wanted = wanted.skipping(recent)
            if shape.boost > 0 or self.new_items is not None:
                shares = session_shares(recent, session.payload.get("categories") or {}, wanted.catalogue.categories)
                shape = shape.seeing(shares if shape.boost > 0 else {}, shares)
        if self.new_items is not None and not shape.taste and session is not None and session.payload.get("history"):
            # No open session to read the taste from: the items of the user's closed sessions (the job keeps them).
            history = [str(item) for item in session.payload["history"]]
            shape = shape.seeing(shape.shares, session_shares(history, {}, wanted.catalogue.categories))
        if use_model and recs is not None and recs.payload.get("items"):
            return await self._model(user_id, k, recs, wanted, explain, shape)
        names = _segments(segment)
        for name, envelope in zip(names, await self.store.popularity(names), strict=True):
            if envelope is not None:
                if self.cache is not None:
                    self.cache.put(name, envelope)
                return self._popularity(user_id, k, name, envelope, wanted, shape)
        return {"user_id": user_id, "source": Source.POPULARITY.value, "model_version": None, "event_time_ms": None,
                "freshness_ms": None, "segment": None, "degraded": False, "items": []}

    async def refresh_cache(self, segments: Sequence[str] = (ALL,)) -> None:
        """Read the popularity of ``segments`` into the cache (best effort, for the degraded path)."""
        if self.cache is None:
            return
        for name, envelope in zip(segments, await self.store.popularity(segments), strict=True):
            if envelope is not None:
                self.cache.put(name, envelope)

    def _cached(self, segment: str | None) -> tuple[str, Envelope] | None:
        if self.cache is None:
            return None
        for name in _segments(segment):
            envelope = self.cache.get(name)
            if envelope is not None:
                return name, envelope
        return None

    async def _model(
        self, user_id: str, k: int, recs: Envelope, wanted: ItemFilter, explain: bool, shape: Shape
    ) -> RecommendationsBody:
        categories = wanted.catalogue.categories
        if shape.whole_list:
            top = shape.apply(_top(recs.payload["items"], wanted, None), categories, k)
        else:
            top = _top(recs.payload["items"], wanted, k)
        if self.new_items is not None:
            top = self.new_items.current.shape(user_id, top, recs.payload["items"], shape.taste, categories,
                                               wanted.allows, self.new_items.slots, k, shape.max_per_category)
        explanations: list[dict[str, Any] | None] = [None] * len(top)
        if explain and top:
            factors, params = await self.store.explain_inputs(user_id, [item for item, _ in top])
            mean = float(recs.payload.get("global_mean") or 0.0)
            whys = [_explain(mean, factors, item) for item in params]
            explanations = [None if why is None else
                            why.model_copy(update={"session_boost": boost_of(item, shape.shares, categories,
                                                                             shape.boost)}).model_dump()
                            for why, (item, _) in zip(whys, top, strict=True)]
        now = self.clock_ms()
        return {
            "user_id": user_id, "source": Source.MODEL.value, "model_version": recs.model_version,
            "event_time_ms": recs.event_time_ms, "freshness_ms": now - recs.event_time_ms, "segment": None,
            "degraded": False,
            "items": [{"item_id": item, "score": score, "explanation": why}
                      for (item, score), why in zip(top, explanations, strict=True)],
        }

    def _popularity(
        self, user_id: str, k: int, segment: str, envelope: Envelope, wanted: ItemFilter, shape: Shape,
        degraded: bool = False,
    ) -> RecommendationsBody:
        now = self.clock_ms()
        eligible = [(item, score) for item, score in _decayed(envelope.payload, now) if wanted.allows(item)]
        # Popularity is not re-ranked by the session (its scores are counts, not the model's scale); capped, yes.
        items = shape.apply(eligible, wanted.catalogue.categories, k, rerank=False)
        return {
            "user_id": user_id, "source": Source.POPULARITY.value, "model_version": envelope.model_version,
            "event_time_ms": envelope.event_time_ms, "freshness_ms": now - envelope.event_time_ms,
            "segment": segment, "degraded": degraded,
            "items": [{"item_id": item, "score": score, "explanation": None} for item, score in items],
        }


def _top(items: list[Any], wanted: ItemFilter, k: int | None) -> list[tuple[str, float]]:
    """The first ``k`` ranked ``(item, score)`` pairs ``wanted`` allows (stops reading at ``k``; None: all).

    >>> _top([["a", 3], ["b", 2], ["c", 1]], ItemFilter(Catalogue(), frozenset({"a"})), 1)
    [('b', 2.0)]
    """
    if k is None:
        return wanted.allowed(items)
    top: list[tuple[str, float]] = []
    for item, score in items:
        name = str(item)
        if wanted.allows(name):
            top.append((name, float(score)))
            if k is not None and len(top) >= k:
                break
    return top


def _explain(global_mean: float, user: Envelope | None, item: Envelope | None) -> Explanation | None:
    """The parts of one score, or ``None`` when the user's factors or the item's parameters are missing."""
    if user is None or item is None:
        return None
    u, i = user.payload, item.payload
    user_factors, item_factors = u.get("factors") or [], i.get("factors") or []
    if len(user_factors) != len(item_factors):
        return None
    dot = math.fsum(float(a) * float(b) for a, b in zip(user_factors, item_factors, strict=True))
    user_bias, item_bias = float(u.get("bias", 0.0)), float(i.get("bias", 0.0))
    version = i.get("version")
    return Explanation(
        global_mean=global_mean, user_bias=user_bias, item_bias=item_bias, dot=dot,
        total=global_mean + user_bias + item_bias + dot,
        item_params_version=int(version) if isinstance(version, int) else None,
    )
