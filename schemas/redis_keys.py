"""The Redis key scheme and value envelope: what the Flink job writes and the serving shim reads.

Pure (no I/O). ADR: docs/adr/0003-redis-key-scheme.md.

Keys, all under one configurable prefix (``pulse`` by default):

=========================================  ==============================================
``<prefix>:user:{<user_id>}``               everything of one user, format 2 (:mod:`schemas.redis_values`)
``<prefix>:item:{<item_id>}``               item bias + factors, format 2
``<prefix>:user:{<user_id>}:recs``          ranked top-k scores of one user (format 1, read for upgrades)
``<prefix>:user:{<user_id>}:session``       the user's live session
``<prefix>:user:{<user_id>}:counts``        lifetime event counts by type + events learned
``<prefix>:user:{<user_id>}:factors``       user bias + factors (for explanations)
``<prefix>:user:{<user_id>}:blocks``        set of item ids the user blocked (serving and the job write it)
``<prefix>:user:{<user_id>}:blocked_categories``  set of categories the user blocked
``<prefix>:item:{<item_id>}:params``        item bias + factors (format 1)
``<prefix>:{items}:learned``                set of the ids of every item with factors (either format)
``<prefix>:bandit:<policy>:<scope_key>``    bandit arm parameters of one scope
``<prefix>:popularity:<segment>``           decayed popularity top-n of one segment
``<prefix>:model:<name>``                   model metadata (events learned, RMSE, version, ...)
``<prefix>:experiment:<name>``              an experiment's exposures and attributed outcomes by variant
=========================================  ==============================================

The braces are Redis Cluster hash tags: every key of one user hashes to the same slot, so a
user's keys can be read or deleted together in one multi-key command. Ids are opaque strings;
``%``, ``{`` and ``}`` in them are percent-escaped (and ``:`` in a bandit policy, the one
component that is not last), so distinct ids always give distinct keys and a brace in an id
can never move the hash tag.

>>> keys = RedisKeys()
>>> keys.recs("u1")
'pulse:user:{u1}:recs'
>>> keys.user_record("u1"), keys.item_record("i9")
('pulse:user:{u1}', 'pulse:item:{i9}')
>>> keys.user_keys("u1")  # doctest: +NORMALIZE_WHITESPACE
['pulse:user:{u1}', 'pulse:user:{u1}:recs', 'pulse:user:{u1}:session', 'pulse:user:{u1}:counts',
 'pulse:user:{u1}:factors', 'pulse:user:{u1}:blocks', 'pulse:user:{u1}:blocked_categories']
>>> keys.item_params("i{9}")
'pulse:item:{i%7B9%7D}:params'
>>> keys.bandit("eps:greedy", "home/mobile"), keys.popularity("all"), keys.model("mf")
('pulse:bandit:eps%3Agreedy:home/mobile', 'pulse:popularity:all', 'pulse:model:mf')

A user's and an item's values are format 2: one compact Redis string each
(:mod:`schemas.redis_values`). Every other value (and format 1's per-user and per-item keys) is an
:class:`Envelope` stored as a Redis hash with fields ``v`` (orjson payload), ``et`` (event time in
ms that produced it), ``wt`` (write time in ms) and ``mv`` (model version).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

__all__ = [
    "FIELD_EVENT_TIME",
    "FIELD_MODEL_VERSION",
    "FIELD_VALUE",
    "FIELD_WRITE_TIME",
    "Envelope",
    "EnvelopeFields",
    "RedisKeys",
    "UserKind",
    "decode_payload",
    "encode_payload",
    "item_id_of_key",
]

#: Hash fields of every value Pulse stores.
FIELD_VALUE = "v"
FIELD_EVENT_TIME = "et"
FIELD_WRITE_TIME = "wt"
FIELD_MODEL_VERSION = "mv"
_FIELDS = (FIELD_VALUE, FIELD_EVENT_TIME, FIELD_WRITE_TIME, FIELD_MODEL_VERSION)

_PREFIX = re.compile(r"[A-Za-z0-9_.-]+(?::[A-Za-z0-9_.-]+)*")
_ESCAPES = {ord("%"): "%25", ord("{"): "%7B", ord("}"): "%7D"}
_ESCAPES_WITH_COLON = {**_ESCAPES, ord(":"): "%3A"}
_UNESCAPES = {"%25": "%", "%7B": "{", "%7D": "}"}
_ESCAPED = re.compile("%25|%7B|%7D")
_ORJSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY

#: What ``HGETALL`` returns: bytes, or str with ``decode_responses=True``.
EnvelopeFields = Mapping[bytes, bytes | str] | Mapping[str, bytes | str] | Mapping[bytes | str, bytes | str]


class UserKind(StrEnum):
    """The kinds of per-user keys; the value is the key's last component."""

    RECS = "recs"
    SESSION = "session"
    COUNTS = "counts"
    FACTORS = "factors"


def item_id_of_key(key: str, prefix: str) -> tuple[str, bool] | None:
    """``(item id, format 2)`` of an item key under ``prefix``: ``RedisKeys.item_record``/``item_params`` reversed.

    >>> item_id_of_key("pulse:item:{i%7B9%7D}", "pulse"), item_id_of_key("pulse:item:{i9}:params", "pulse")
    (('i{9}', True), ('i9', False))
    >>> item_id_of_key("pulse:item:{i9}:other", "pulse"), item_id_of_key("pulse:user:{u1}", "pulse")
    (None, None)
    """
    head = f"{prefix}:item:{{"
    if not key.startswith(head):
        return None
    escaped, brace, rest = key[len(head):].partition("}")
    if not brace or not escaped or rest not in ("", ":params"):
        return None
    return _ESCAPED.sub(lambda match: _UNESCAPES[match.group()], escaped), rest == ""


def _component(what: str, value: str, escapes: Mapping[int, str] = _ESCAPES) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    if not value:
        raise ValueError(f"{what} must not be empty")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{what} {value!r} is not valid Unicode text (lone surrogate)") from exc
    return value.translate(escapes)


#: The catalogue's index keys, in the order the job's catalogue script takes them.
CATALOGUE_INDEXES = ("unavailable", "category", "version")


@dataclass(frozen=True, slots=True)
class RedisKeys:
    """Builds every Redis key Pulse uses, under ``prefix``.

    ``prefix`` is one or more ``:``-separated words of ``[A-Za-z0-9_.-]``: no braces (they would
    become the hash tag of every key) and no glob characters (so ``pattern()`` matches only ours).

    >>> RedisKeys("pulse-test-1").session("ü ser:1")
    'pulse-test-1:user:{ü ser:1}:session'
    >>> RedisKeys("{pulse}")
    Traceback (most recent call last):
    ...
    ValueError: Redis key prefix '{pulse}' must be ':'-separated words of [A-Za-z0-9_.-]
    """

    prefix: str = "pulse"

    def __post_init__(self) -> None:
        if not isinstance(self.prefix, str) or not _PREFIX.fullmatch(self.prefix):
            raise ValueError(f"Redis key prefix {self.prefix!r} must be ':'-separated words of [A-Za-z0-9_.-]")

    def user(self, user_id: str, kind: UserKind | str) -> str:
        """The key of one kind of per-user value.

        >>> RedisKeys().user("u1", "counts")
        'pulse:user:{u1}:counts'
        """
        return f"{self.prefix}:user:{{{_component('user_id', user_id)}}}:{UserKind(kind).value}"

    def recs(self, user_id: str) -> str:
        """Ranked top-k scores of one user."""
        return self.user(user_id, UserKind.RECS)

    def session(self, user_id: str) -> str:
        """The live session of one user."""
        return self.user(user_id, UserKind.SESSION)

    def counts(self, user_id: str) -> str:
        """Lifetime event counts by type and events learned, of one user."""
        return self.user(user_id, UserKind.COUNTS)

    def factors(self, user_id: str) -> str:
        """User bias and factors (for explanations)."""
        return self.user(user_id, UserKind.FACTORS)

    def user_record(self, user_id: str) -> str:
        """Everything of one user in format 2: counts, live session, factors, top-k scores."""
        return f"{self.prefix}:user:{{{_component('user_id', user_id)}}}"

    def item_record(self, item_id: str) -> str:
        """An item's bias and factors in format 2."""
        return f"{self.prefix}:item:{{{_component('item_id', item_id)}}}"

    def covisit(self, item_id: str) -> str:
        """An item's co-visited items with their counts (``pulse covisit --write``; similar items ``method=covisit``).

        >>> RedisKeys().covisit("i9")
        'pulse:covisit:{i9}'
        """
        return f"{self.prefix}:covisit:{{{_component('item_id', item_id)}}}"

    def blocks(self, user_id: str) -> str:
        """The items one user blocked ("not interested"), a set; never served to that user.

        Not a :class:`UserKind`: a set both serving (``POST /v1/users/{id}/blocks``) and the job
        (a version-2 ``block`` event) add to, never part of the user's format-2 record.

        >>> RedisKeys().blocks("u1")
        'pulse:user:{u1}:blocks'
        """
        return f"{self.prefix}:user:{{{_component('user_id', user_id)}}}:blocks"

    def blocked_categories(self, user_id: str) -> str:
        """The categories one user blocked ("not interested"), a set; no item of them is served to that user.

        >>> RedisKeys().blocked_categories("u1")
        'pulse:user:{u1}:blocked_categories'
        """
        return f"{self.prefix}:user:{{{_component('user_id', user_id)}}}:blocked_categories"

    def user_keys(self, user_id: str) -> list[str]:
        """Every key holding data of one user, both formats (what erasure deletes); all in one cluster slot."""
        return [self.user_record(user_id), *(self.user(user_id, kind) for kind in UserKind), self.blocks(user_id),
                self.blocked_categories(user_id)]

    def erasures(self) -> str:
        """The erasure log (a stream): what each erasure removed, when; no user id, only its digest.

        >>> RedisKeys().erasures()
        'pulse:erasures'
        """
        return f"{self.prefix}:erasures"

    def item_params(self, item_id: str) -> str:
        """Item bias and factors.

        >>> RedisKeys().item_params("i9")
        'pulse:item:{i9}:params'
        """
        return f"{self.prefix}:item:{{{_component('item_id', item_id)}}}:params"

    def learned_items(self) -> str:
        """The set of the ids of every item the job has written factors for (serving reads items by it).

        Its own hash tag: one set, added to by the item owners (with an item's first write, then every
        10 minutes), read page by page (``SSCAN``) instead of a ``SCAN`` of the whole keyspace, which
        holds every user's keys too.

        >>> RedisKeys().learned_items()
        'pulse:{items}:learned'
        """
        return f"{self.prefix}:{{items}}:learned"

    def catalogue_item(self, item_id: str) -> str:
        """An item's catalogue entry (category, availability, attributes; an envelope hash).

        Every catalogue key shares the hash tag ``{catalogue}``: the job updates an entry and the
        catalogue's indexes (:meth:`catalogue_index`) in one script, which Redis Cluster allows
        only within one slot.

        >>> RedisKeys().catalogue_item("i9")
        'pulse:{catalogue}:item:i9'
        """
        return f"{self.prefix}:{{catalogue}}:item:{_component('item_id', item_id)}"

    def catalogue_index(self, name: str) -> str:
        """One of the catalogue's indexes, which serving reads whole.

        ``unavailable`` is a set of item ids, ``category`` a hash item id -> category and
        ``version`` a counter bumped on every change of either.

        >>> RedisKeys().catalogue_index("unavailable")
        'pulse:{catalogue}:unavailable'
        """
        if name not in CATALOGUE_INDEXES:
            raise ValueError(f"unknown catalogue index {name!r}; one of {', '.join(CATALOGUE_INDEXES)}")
        return f"{self.prefix}:{{catalogue}}:{name}"

    def bandit(self, policy: str, scope_key: str) -> str:
        """Arm parameters of one bandit policy in one scope (e.g. a placement or segment).

        Scopes are not user ids: per-user data belongs under :meth:`user` so erasure finds it.

        >>> RedisKeys().bandit("ucb", "home:top")
        'pulse:bandit:ucb:home:top'
        """
        policy_part = _component("policy", policy, _ESCAPES_WITH_COLON)
        return f"{self.prefix}:bandit:{policy_part}:{_component('scope_key', scope_key)}"

    def popularity(self, segment: str) -> str:
        """Decayed popularity top-n of one segment."""
        return f"{self.prefix}:popularity:{_component('segment', segment)}"

    def experiment(self, name: str) -> str:
        """One experiment's attributed results by variant (the job writes it; serving and the CLI report it).

        >>> RedisKeys().experiment("home-recs")
        'pulse:experiment:home-recs'
        """
        return f"{self.prefix}:experiment:{_component('experiment', name)}"

    def model(self, name: str) -> str:
        """Metadata of one model: events learned, running prequential RMSE (or HitRate@k), version."""
        return f"{self.prefix}:model:{_component('name', name)}"

    def live(self, part: str | None = None) -> str:
        """The alias naming the prefix serving reads (``pulse model promote``); absent: this prefix.

        ``part`` names its companions (``history``, ``log``), in the same cluster slot.

        >>> RedisKeys("pulse").live(), RedisKeys("pulse").live("history")
        ('pulse:{live}', 'pulse:{live}:history')
        """
        return f"{self.prefix}:{{live}}" if part is None else f"{self.prefix}:{{live}}:{part}"

    def pattern(self) -> str:
        """A ``SCAN MATCH`` pattern for every key under this prefix.

        >>> RedisKeys("pulse").pattern()
        'pulse:*'
        """
        return f"{self.prefix}:*"


def encode_payload(payload: Any) -> bytes:
    """A payload as orjson bytes; numpy arrays and scalars are allowed (they come back as lists/numbers).

    >>> import numpy as np
    >>> encode_payload({"bias": 0.5, "factors": np.array([1.0, 2.0])})
    b'{"bias":0.5,"factors":[1.0,2.0]}'
    """
    return orjson.dumps(payload, option=_ORJSON_OPTIONS)


def decode_payload(data: bytes | str) -> Any:
    """The inverse of :func:`encode_payload`."""
    return orjson.loads(data)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


@dataclass(frozen=True, slots=True)
class Envelope:
    """One stored value: the payload, the event time that produced it, when and by which model it was written.

    >>> env = Envelope({"items": ["i1", "i2"], "scores": [0.9, 0.4]}, 1_700_000_000_000, 1_700_000_000_250, "mf-3")
    >>> fields = env.to_fields()
    >>> fields["et"], fields["mv"]
    (b'1700000000000', b'mf-3')
    >>> Envelope.from_fields({k.encode(): v for k, v in fields.items()}) == env
    True
    >>> Envelope.from_fields_or_none({}) is None
    True
    """

    payload: Any
    event_time_ms: int
    write_time_ms: int
    model_version: str

    def to_fields(self) -> dict[str, bytes]:
        """The hash fields ``v``, ``et``, ``wt``, ``mv`` as bytes (what ``HSET`` stores)."""
        for name in ("event_time_ms", "write_time_ms"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an int of milliseconds, not {value!r}")
        return {
            FIELD_VALUE: encode_payload(self.payload),
            FIELD_EVENT_TIME: str(self.event_time_ms).encode(),
            FIELD_WRITE_TIME: str(self.write_time_ms).encode(),
            FIELD_MODEL_VERSION: str(self.model_version).encode("utf-8"),
        }

    @classmethod
    def from_fields(cls, fields: EnvelopeFields) -> Envelope:
        """Parse the result of ``HGETALL`` (bytes or decoded str); ``ValueError`` if it is not an envelope.

        >>> Envelope.from_fields({"v": "1"})
        Traceback (most recent call last):
        ...
        ValueError: not a Pulse envelope: missing field(s) et, wt, mv
        """
        by_name = {_text(name): value for name, value in fields.items()}
        missing = [name for name in _FIELDS if name not in by_name]
        if missing:
            raise ValueError(f"not a Pulse envelope: missing field(s) {', '.join(missing)}")
        try:
            return cls(
                payload=decode_payload(by_name[FIELD_VALUE]),
                event_time_ms=int(_text(by_name[FIELD_EVENT_TIME])),
                write_time_ms=int(_text(by_name[FIELD_WRITE_TIME])),
                model_version=_text(by_name[FIELD_MODEL_VERSION]),
            )
        except (orjson.JSONDecodeError, ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"not a Pulse envelope: {exc}") from exc

    @classmethod
    def from_fields_or_none(cls, fields: EnvelopeFields) -> Envelope | None:
        """Like :meth:`from_fields`, but ``None`` for an empty mapping (``HGETALL`` of a missing key)."""
        return cls.from_fields(fields) if fields else None
