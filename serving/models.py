"""Request and response models of the serving API (what ``/openapi.json`` describes).

Ids are opaque strings limited in length and charset (:data:`ID_PATTERN`) so they are safe in
paths, logs and Redis keys.

>>> DecisionRequest(user_id="u1", decision_point="home", arms=["a", "b"]).arms
['a', 'b']
>>> Error(error="redis_unavailable", detail="Redis did not answer").model_dump()
{'error': 'redis_unavailable', 'detail': 'Redis did not answer'}
"""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StringConstraints,
    field_validator,
    model_validator,
)

from schemas.codec import BOM_STARTS, Limits
from schemas.events import EventType

__all__ = [
    "ID_PATTERN",
    "MAX_FILTER_VALUES",
    "MAX_ID_LENGTH",
    "MAX_K",
    "MAX_SESSION_BOOST",
    "Accepted",
    "BatchResult",
    "Blocks",
    "BlocksIn",
    "DecisionIn",
    "DecisionRequest",
    "DecisionResponse",
    "Erased",
    "Error",
    "EventBatchIn",
    "EventIn",
    "EventResult",
    "Explanation",
    "Health",
    "Id",
    "Recommendations",
    "RecommendedItem",
    "Session",
    "SimilarItem",
    "SimilarItems",
    "Source",
]

MAX_ID_LENGTH = 256
MAX_K = 1000
#: Values of one recommendations filter (``exclude``, ``category``, ``exclude_category``) per request.
MAX_FILTER_VALUES = 100
#: Upper bound of the ``session_boost`` query parameter (scores are on the model's scale, a few units).
MAX_SESSION_BOOST = 100.0
MAX_ARMS = 100
MAX_CONTEXT_ENTRIES = 32
MAX_CONTEXT_VALUE = 256
MIN_EVENT_TIME_MS = Limits().min_event_time_ms
#: Letters, digits and ``_ . : @ + = -``; no ``/`` (paths), braces or control characters.
ID_PATTERN = r"^[A-Za-z0-9_.:@+=-]+$"

Id = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN)]
ContextValue = Annotated[str, StringConstraints(max_length=MAX_CONTEXT_VALUE, pattern=r"^[^\x00-\x1f\x7f]*$")]
Context = Annotated[
    dict[Id, ContextValue],
    Field(max_length=MAX_CONTEXT_ENTRIES, json_schema_extra={
        "propertyNames": {"minLength": 1, "maxLength": MAX_ID_LENGTH, "pattern": ID_PATTERN},
        "additionalProperties": False,
    }),
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Error(_Model):
    """Every 4xx/5xx body: a machine-readable reason and one human line (never a stack trace)."""

    error: str = Field(description="Machine-readable reason, e.g. redis_unavailable, invalid_request")
    detail: str = Field(default="", description="What went wrong, for humans")


class Source(StrEnum):
    """Where recommendations came from."""

    MODEL = "model"
    POPULARITY = "popularity"


class Explanation(_Model):
    """The parts of a matrix-factorisation score; ``total`` is their sum."""

    global_mean: float
    user_bias: float
    item_bias: float
    dot: float = Field(description="Dot product of user and item factors")
    total: float = Field(description="global_mean + user_bias + item_bias + dot")
    item_params_version: int | None = Field(default=None, description="Updates the item parameters had seen")
    session_boost: float = Field(default=0.0, description="What the session re-rank added: the item's score "
                                 "is total + session_boost")


class RecommendedItem(_Model):
    """One recommended item and its score."""

    item_id: str
    score: float
    explanation: Explanation | None = Field(default=None, description="Only with explain=true and source=model")


class Recommendations(_Model):
    """A user's top-k, from the live model or, for cold users, from segment popularity."""

    user_id: str
    source: Source
    model_version: str | None = Field(description="Model version that wrote the scores (None: nothing to serve)")
    event_time_ms: int | None = Field(description="Event time of the newest event the scores reflect")
    freshness_ms: int | None = Field(description="Now minus event_time_ms")
    segment: str | None = Field(default=None, description="Popularity segment served (source=popularity)")
    degraded: bool = Field(default=False, description="True when served from the in-process cache because Redis failed")
    items: list[RecommendedItem]
    request_id: str = Field(description="Names this answer; send it back as request_id on the events it leads to")
    experiment: str | None = Field(default=None, description="The recommendations experiment the user is in "
                                   "(PULSE_EXPERIMENTS); None: none")
    variant: str | None = Field(default=None, description="The user's variant of that experiment (hashed assignment)")


class Session(_Model):
    """The user's live session as the job last wrote it."""

    user_id: str
    open: bool
    session_id: str | None = None
    start_ms: int | None = None
    end_ms: int | None = None
    n_events: int = 0
    n_late: int = 0
    counts: dict[str, int] = Field(default_factory=dict)
    recent_items: list[str] = Field(default_factory=list)
    categories: dict[str, int] = Field(default_factory=dict)
    model_version: str
    event_time_ms: int
    freshness_ms: int


class DecisionRequest(_Model):
    """Ask the bandit which arm to show."""

    user_id: Id
    decision_point: Id = Field(description="Where the decision is shown (placement), logged with it")
    arms: list[Id] | None = Field(
        default=None, min_length=1, max_length=MAX_ARMS, description="Candidate arms (default: the known arms)",
        json_schema_extra={"uniqueItems": True},
    )
    context: Context = Field(default_factory=dict, description="String context; `segment` selects a segment scope")

    @field_validator("arms")
    @classmethod
    def _distinct(cls, arms: list[str] | None) -> list[str] | None:
        if arms is not None and len(set(arms)) != len(arms):
            raise ValueError("arms must be distinct")
        return arms

    @field_validator("context")
    @classmethod
    def _segment_is_a_key(cls, context: dict[str, str]) -> dict[str, str]:
        # The one check of the job's (schemas/codec.py) that the ids' pattern does not already make:
        # the impression is checked again when it is written, after the answer (serving/collector.py).
        if context.get("segment", "").startswith(BOM_STARTS):
            raise ValueError("context.segment starts with a byte-order mark")
        return context


class DecisionResponse(_Model):
    """The chosen arm, the probability the serving policy had of choosing it, and the assignment."""

    request_id: str = Field(description="Send it back as context.request_id on the click that answers it")
    arm: str
    propensity: float = Field(gt=0.0, le=1.0)
    policy: str = Field(description="The bandit policy, ts, ucb or egreedy (treatment), or uniform (control)")
    experiment: str | None = Field(description="The decisions experiment (None: the user is outside its shares)")
    variant: str | None = Field(description="The user's variant, e.g. treatment or control (None: outside the shares)")
    scope: str = Field(description="Bandit scope whose parameters were used, e.g. global, segment:men")
    model_version: str | None = Field(default=None, description="Version of the bandit parameters (None: prior only)")


class DecisionIn(_Model):
    """The decision an impression event carries."""

    request_id: Id
    policy: Id
    arm: Id
    propensity: StrictFloat = Field(gt=0.0, le=1.0)


class EventIn(_Model):
    """One event for the HTTP collector; mirrors ``schemas/event.avsc``.

    The job's checks that depend on the type or the clock answer 400 with their reason: item
    events need ``item_id``, ratings a ``value``, impressions a ``decision``; event time at most
    24 h in the future.
    """

    event_id: Id = Field(default_factory=lambda: uuid.uuid4().hex)
    type: EventType
    user_id: Id
    item_id: Id | None = None
    value: StrictFloat | None = Field(default=None, allow_inf_nan=False)
    event_time_ms: StrictInt | None = Field(
        default=None, ge=MIN_EVENT_TIME_MS, lt=2**63,
        description="Milliseconds since the epoch, at most 24 h ahead of the server clock; default: now",
    )
    context: Context = Field(default_factory=dict)
    decision: DecisionIn | None = None
    request_id: Id | None = Field(
        default=None, description="The request_id of the recommendations or decision this event answers "
        "(stored as context.request_id, for attribution)",
    )


class Accepted(_Model):
    """The broker acknowledged the event."""

    event_id: str
    topic: str
    partition: int
    offset: int


class EventBatchIn(_Model):
    """Events for ``POST /v1/events:batch``; each is checked on its own (JSON, also sent as text/plain)."""

    events: list[EventIn] = Field(min_length=1, description="At most serving_batch_max_events events")


class EventResult(_Model):
    """What happened to one event of a batch."""

    index: int = Field(description="Position of the event in the batch")
    status: Literal["accepted", "rejected", "failed"] = Field(
        description="accepted: the broker acknowledged it; rejected: invalid, do not resend; "
        "failed: the broker did not acknowledge it, resend"
    )
    event_id: str | None = None
    partition: int | None = None
    offset: int | None = None
    error: str | None = Field(default=None, description="Why it was rejected or failed (an Error reason)")
    detail: str | None = None


class BatchResult(_Model):
    """Per-event results of a batch, in order, and their counts."""

    accepted: int
    rejected: int
    failed: int
    results: list[EventResult]


class BlocksIn(_Model):
    """Items and catalogue categories to block for a user ("not interested"), or to unblock; at least one."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "anyOf": [{"required": ["item_ids"]}, {"required": ["categories"]}]})

    item_ids: list[Id] = Field(default_factory=list, min_length=1, max_length=MAX_FILTER_VALUES,
                               description="Item ids")
    categories: list[Id] = Field(default_factory=list, min_length=1, max_length=MAX_FILTER_VALUES,
                                 description="Catalogue categories: no item of them is served to the user")

    @model_validator(mode="after")
    def _something(self) -> BlocksIn:
        if not self.item_ids and not self.categories:
            raise ValueError("name at least one of item_ids, categories")
        return self


class Blocks(_Model):
    """What a user has blocked now: never in that user's recommendations or similar items."""

    user_id: str
    item_ids: list[str] = Field(description="Every item the user has blocked, sorted")
    categories: list[str] = Field(default_factory=list, description="Every category the user has blocked, sorted")
    changed: int = Field(description="How many of the request's items and categories were added (POST) or "
                         "removed (DELETE); 0 for GET")


class SimilarItem(_Model):
    """One similar item and how similar it is."""

    item_id: str
    similarity: float = Field(description="method factors: cosine similarity of the two items' factors, from -1 to "
                              "1; method covisit: the pair's weighted co-visit count")


class SimilarItems(_Model):
    """The items most similar to one item by the model's item factors (or co-visitation), most similar first."""

    item_id: str
    method: Literal["factors", "covisit"] = "factors"
    model_version: str | None = Field(description="Model version that wrote the item's factors (or the lists)")
    indexed_at_ms: int = Field(description="When this worker last read every item's factors (the index answered "
                               "from; a new item is found from the next read on); covisit: when the lists were written")
    items: list[SimilarItem]


class Erased(_Model):
    """Erasure done: the erase event is acknowledged and the user's keys deleted."""

    user_id: str
    event_id: str
    keys_deleted: int


class Health(_Model):
    """Liveness/readiness and the checks behind it."""

    status: str
    checks: dict[str, str] = Field(default_factory=dict)


class ExperimentReport(_Model):
    """An experiment's results as the job attributed them: per variant its counts, rates and the comparison.

    The same data as ``pulse experiments report NAME --json`` (``serving/experiment_results.py``).
    """

    experiment: str
    surface: str
    prefix: str = Field(description="The live prefix the results were read under")
    key: str = Field(description="The Redis key the job writes them to")
    outcome: str = Field(description="What counts as a success of an exposure: clicked, carted or purchased")
    control: str
    confidence: float
    window_ms: int | None = Field(description="The attribution window of the job that counted them")
    event_time_ms: int | None
    write_time_ms: int | None
    variants: list[dict[str, Any]] = Field(description="Per variant: exposures, clicked, clicks, carted, purchased, "
                                           "purchases, rates with 95% intervals, and vs_control (difference, lift, "
                                           "their intervals, p-value, verdict)")
    verdicts: list[str]
