"""Redis reads of the serving shim: the keys the Flink job writes, as :class:`Envelope` values.

One method = one round trip (all its commands in one write, as a non-transactional pipeline).
Users and items are read in format 2 (one string each, :mod:`schemas.redis_values`); where a key
has no format-2 value yet and ``legacy_reads`` is on, its format-1 hashes are read in one more
round trip, so serving can be upgraded before the job (ADR 0003). The
reads go over :class:`~serving.redis_mux.MultiplexedRedis` (one pipelined connection shared by
concurrent requests) unless the URL is TLS; deletes and PING use the redis-py pool. Connection
failures and timeouts become :class:`StoreUnavailableError`; a value that is not a Pulse envelope
becomes :class:`StoreCorruptError`. Key scheme: :mod:`schemas.redis_keys` (ADR 0003).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from config import Settings
from schemas.redis_keys import Envelope, RedisKeys, UserKind
from schemas.redis_values import decode_item_value, decode_user_value
from serving.redis_mux import MultiplexedRedis

__all__ = ["RedisStore", "StoreCorruptError", "StoreError", "StoreUnavailableError", "TooManyBlocksError"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")
#: Adds (``add``) or removes (``rem``) a user's blocks; an add past the cap (ARGV[2], -1: none) changes nothing.
#: KEYS: the blocked items, the blocked categories (one hash slot). ARGV: mode, cap, how many of the rest are
#: items, the items, the categories. Answers ``{changed, items, categories}``, or ``{-1, blocks, new}`` over the cap.
_BLOCK_SCRIPT = """
local n_items, cap = tonumber(ARGV[3]), tonumber(ARGV[2])
local function key_of(i) if i - 3 <= n_items then return KEYS[1] end return KEYS[2] end
if ARGV[1] == 'add' and cap >= 0 then
  local new = 0
  for i = 4, #ARGV do new = new + 1 - redis.call('SISMEMBER', key_of(i), ARGV[i]) end
  local total = redis.call('SCARD', KEYS[1]) + redis.call('SCARD', KEYS[2])
  if new > 0 and total + new > cap then return {-1, total, new} end
end
local changed, command = 0, 'SADD'
if ARGV[1] == 'rem' then command = 'SREM' end
for i = 4, #ARGV do changed = changed + redis.call(command, key_of(i), ARGV[i]) end
return {changed, redis.call('SMEMBERS', KEYS[1]), redis.call('SMEMBERS', KEYS[2])}
"""
#: Bandit keys whose last value is kept parsed (:meth:`RedisStore.bandits`).
_MAX_BANDIT_KEYS = 4096


class StoreError(RuntimeError):
    """A read failed; ``reason`` is machine-readable."""

    reason = "redis_error"


class StoreUnavailableError(StoreError):
    """Redis did not answer (down, timeout, refused)."""

    reason = "redis_unavailable"


class TooManyBlocksError(ValueError):
    """Blocking would take a user past the cap; nothing was changed."""

    reason = "too_many_blocks"

    def __init__(self, blocked: int, adding: int, cap: int) -> None:
        super().__init__(f"the user has {blocked} blocks and this adds {adding} new ones: at most {cap} items "
                         "and categories together (PULSE_SERVING_MAX_BLOCKS); unblock some first")


class StoreCorruptError(StoreError):
    """A key holds something that is not a Pulse envelope."""

    reason = "bad_value"


def _as_mapping(reply: Any) -> Any:
    """An ``HGETALL`` reply as a mapping: RESP2 gives a flat ``[field, value, ...]`` list, RESP3 a dict.

    >>> _as_mapping([b"v", b"1", b"et", b"2"]), _as_mapping([]), _as_mapping({b"v": b"1"})
    ({b'v': b'1', b'et': b'2'}, {}, {b'v': b'1'})
    """
    if isinstance(reply, list):
        return dict(zip(reply[::2], reply[1::2], strict=True))
    return reply


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _members(reply: Any) -> frozenset[str]:
    """An ``SMEMBERS`` reply (list, or set under RESP3) as text."""
    return frozenset(_text(member) for member in reply or ())


def _envelope(key: str, fields: Any) -> Envelope | None:
    try:
        return Envelope.from_fields_or_none(fields)
    except ValueError as exc:
        raise StoreCorruptError(f"{key}: {exc}") from exc


def _compact(key: str, data: Any, decode: Callable[[bytes], _T]) -> _T | None:
    """A format-2 value (``GET`` reply) decoded, ``None`` for a missing key."""
    if data is None:
        return None
    try:
        return decode(data)
    except ValueError as exc:
        raise StoreCorruptError(f"{key}: {exc}") from exc


class RedisStore:
    """Reads recommendations, sessions, factors, item parameters, bandits and popularity."""

    def __init__(
        self, client: aioredis.Redis, keys: RedisKeys, mux: MultiplexedRedis | None = None, *, legacy_reads: bool = True
    ) -> None:
        self.client = client
        self.keys = keys
        self.mux = mux
        self.legacy_reads = legacy_reads  # read format-1 keys where no format-2 value is (ADR 0003)
        self._bandits: dict[str, tuple[tuple[Any, ...], Envelope | None]] = {}  # key -> last reply, its envelope
        self._bandit_keys: dict[tuple[str, str], str] = {}  # (policy, scope) -> key (escaping costs per request)
        self._block_script: AsyncScript | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisStore:
        """A store over a connection pool built from the settings (no I/O yet)."""
        client = aioredis.Redis.from_url(
            settings.redis_url,
            socket_timeout=settings.serving_redis_timeout_s,
            socket_connect_timeout=settings.serving_redis_timeout_s,
            max_connections=settings.serving_redis_max_connections,
            **settings.redis_client_kwargs(),
        )
        password = settings.redis_client_kwargs().get("password")
        mux = MultiplexedRedis.from_url(settings.redis_url, password=password,
                                        timeout_s=settings.serving_redis_timeout_s,
                                        connect_timeout_s=settings.serving_redis_timeout_s)
        return cls(client, RedisKeys(settings.redis_prefix), mux, legacy_reads=settings.serving_legacy_reads)

    async def close(self) -> None:
        """Close the pool (and the multiplexed connection)."""
        if self.mux is not None:
            await self.mux.close()
        await self.client.aclose()

    async def ping(self) -> None:
        """One PING."""
        await self._guard(self.client.ping)

    async def read(self, keys: Sequence[str]) -> list[Envelope | None]:
        """``HGETALL`` of every key in one pipeline; ``None`` for a missing key."""
        replies = await self._execute([("HGETALL", key) for key in keys])
        return [_envelope(key, _as_mapping(reply)) for key, reply in zip(keys, replies, strict=True)]

    async def user_parts(
        self, user_id: str, kinds: Sequence[UserKind], top: int | None = None
    ) -> list[Envelope | None]:
        """Parts of a user's value (format 2), or of its format-1 keys when it has none (one more round trip).

        ``top``: the recommendations needed (format 2 decodes only as many as that takes).
        """
        key = self.keys.user_record(user_id)
        (data,) = await self._execute([("GET", key)])
        return await self._user_parts(user_id, data, kinds, top)

    async def _user_parts(
        self, user_id: str, data: Any, kinds: Sequence[UserKind], top: int | None
    ) -> list[Envelope | None]:
        """:meth:`user_parts` from the user's format-2 value as ``GET`` answered it."""
        key = self.keys.user_record(user_id)
        value = _compact(key, data, lambda raw: decode_user_value(raw, top))
        if value is not None:
            return [value.envelope(kind) for kind in kinds]
        if not self.legacy_reads:
            return [None] * len(kinds)
        return await self.read([self.keys.user(user_id, kind) for kind in kinds])

    async def _execute(self, commands: Sequence[tuple[str, str]]) -> list[Any]:
        if not commands:
            return []
        mux = self.mux
        if mux is not None:
            return await self._guard(lambda: mux.execute(list(commands)))
        return await self._guard(lambda: self._pipelined(commands))

    async def _pipelined(self, commands: Sequence[tuple[str, str]]) -> list[Any]:
        """What ``pipeline(transaction=False)`` of ``HGETALL`` sends and reads, without its per-call machinery.

        One connection from the pool, every command in one write, every reply read (so the
        connection goes back clean even when one is an error reply, which is then raised). A
        connection error or timeout disconnects the connection (redis-py's ``read_response`` does).
        """
        pool = self.client.connection_pool
        conn = await pool.get_connection()
        try:
            await conn.send_packed_command(conn.pack_commands(commands))
            replies: list[Any] = []
            error: ResponseError | None = None
            for _ in commands:
                try:
                    replies.append(await conn.read_response())
                except ResponseError as exc:
                    error = error or exc
                    replies.append(None)
            if error is not None:
                raise error
            return replies
        finally:
            await pool.release(conn)

    async def user_view(self, user_id: str, top: int | None = None) -> tuple[Envelope | None, Envelope | None]:
        """The user's ranked scores (enough for the ``top`` best not in the session) and live session."""
        recs, session = await self.user_parts(user_id, (UserKind.RECS, UserKind.SESSION), top)
        return recs, session

    async def user_view_blocked(
        self, user_id: str, top: int | None = None
    ) -> tuple[Envelope | None, Envelope | None, frozenset[str], frozenset[str]]:
        """:meth:`user_view`, the items and the categories the user blocked, read in the same round trip.

        ``top`` counts the items to serve; as many more are decoded as the user blocked items, and
        all of them when the user blocked a category (any stored item may be in one).
        """
        data, items, categories = await self._execute([("GET", self.keys.user_record(user_id)),
                                                       ("SMEMBERS", self.keys.blocks(user_id)),
                                                       ("SMEMBERS", self.keys.blocked_categories(user_id))])
        blocked_items, blocked_categories = _members(items), _members(categories)
        if top is not None:
            top = None if blocked_categories else top + len(blocked_items)
        recs, session = await self._user_parts(user_id, data, (UserKind.RECS, UserKind.SESSION), top)
        return recs, session, blocked_items, blocked_categories

    async def blocked(self, user_id: str) -> tuple[frozenset[str], frozenset[str]]:
        """The items and the categories ``user_id`` blocked (one round trip)."""
        items, categories = await self._execute([("SMEMBERS", self.keys.blocks(user_id)),
                                                 ("SMEMBERS", self.keys.blocked_categories(user_id))])
        return _members(items), _members(categories)

    async def block(
        self, user_id: str, items: Sequence[str], categories: Sequence[str] = (), *, unblock: bool = False,
        max_blocks: int | None = None,
    ) -> tuple[int, frozenset[str], frozenset[str]]:
        """Add (remove with ``unblock``) blocks atomically; how many changed, and the items and categories now.

        An add that would take the user past ``max_blocks`` (items and categories together) changes
        nothing and raises :class:`TooManyBlocksError`.
        """
        items, categories = list(dict.fromkeys(items)), list(dict.fromkeys(categories))  # SISMEMBER counts once
        args = ["rem" if unblock else "add", -1 if max_blocks is None else max_blocks, len(items), *items, *categories]
        script = self._block_script or self.client.register_script(_BLOCK_SCRIPT)
        self._block_script = script
        reply = await self._guard(lambda: script(keys=[self.keys.blocks(user_id),
                                                       self.keys.blocked_categories(user_id)], args=args))
        if int(reply[0]) < 0:
            raise TooManyBlocksError(int(reply[1]), int(reply[2]), int(max_blocks or 0))
        return int(reply[0]), _members(reply[1]), _members(reply[2])

    async def scan(self, pattern: str, cursor: int, count: int) -> tuple[int, list[str]]:
        """One ``SCAN`` page of the keys matching ``pattern``: the next cursor (0: done) and the keys."""
        next_cursor, keys = await self._guard(lambda: self.client.scan(cursor, match=pattern, count=count))
        return int(next_cursor), [_text(key) for key in keys]

    async def set_page(self, key: str, cursor: int, count: int) -> tuple[int, list[str]] | None:
        """One ``SSCAN`` page of the set at ``key``: the next cursor (0: done) and the members.

        ``None`` when there is no set at ``key``: a first page that is also the last and empty (Redis
        keeps no empty set).
        """
        next_cursor, members = await self._guard(lambda: self.client.sscan(key, cursor, count=count))
        if cursor == 0 and int(next_cursor) == 0 and not members:
            return None
        return int(next_cursor), [_text(member) for member in members]

    async def session(self, user_id: str) -> Envelope | None:
        """The user's live session."""
        return (await self.user_parts(user_id, (UserKind.SESSION,)))[0]

    async def popularity(self, segments: Sequence[str]) -> list[Envelope | None]:
        """Popularity of each segment."""
        return await self.read([self.keys.popularity(segment) for segment in segments])

    async def explain_inputs(self, user_id: str, items: Sequence[str]) -> tuple[Envelope | None, list[Envelope | None]]:
        """The user's factors and the parameters of ``items`` (one round trip; one more for format-1 ones)."""
        user_key, item_keys = self.keys.user_record(user_id), [self.keys.item_record(item) for item in items]
        replies = await self._execute([("GET", user_key), *(("GET", key) for key in item_keys)])
        user = _compact(user_key, replies[0], decode_user_value)
        factors = user.envelope(UserKind.FACTORS) if user is not None else None
        params = [_compact(key, data, decode_item_value) for key, data in zip(item_keys, replies[1:], strict=True)]
        if not self.legacy_reads or (user is not None and all(p is not None for p in params)):
            return factors, params
        missing = [i for i, p in enumerate(params) if p is None]
        legacy = await self.read([*([] if user is not None else [self.keys.factors(user_id)]),
                                  *(self.keys.item_params(items[i]) for i in missing)])
        if user is None:
            factors, legacy = legacy[0], legacy[1:]
        for i, envelope in zip(missing, legacy, strict=True):
            params[i] = envelope
        return factors, params

    async def read_raw(self, commands: Sequence[tuple[str, str]]) -> list[Any]:
        """Plain replies of ``commands`` in one round trip (e.g. ``GET`` of a string that is no envelope)."""
        return await self._execute(commands)

    async def catalogue_version(self) -> int:
        """The version of the catalogue's indexes (0 when the job has written none)."""
        (reply,) = await self._execute([("GET", self.keys.catalogue_index("version"))])
        return int(reply or 0)

    async def catalogue_indexes(self) -> tuple[set[str], dict[str, str]]:
        """The unavailable items and every item's category (one round trip)."""
        unavailable, categories = await self._execute([("SMEMBERS", self.keys.catalogue_index("unavailable")),
                                                       ("HGETALL", self.keys.catalogue_index("category"))])
        return ({_text(item) for item in unavailable or ()},
                {_text(item): _text(category) for item, category in _as_mapping(categories or []).items()})

    async def bandits(self, policy: str, scope_keys: Sequence[str]) -> list[Envelope | None]:
        """Arm tables of one policy in each scope.

        A key whose stored value is what it was at the last read gives the *same* :class:`Envelope`
        object (not parsed again): every decision reads its scope's table, which changes only when the
        job writes it.
        """
        keys = [self._bandit_key(policy, scope) for scope in scope_keys]
        replies = await self._execute([("HGETALL", key) for key in keys])
        return [self._bandit_envelope(key, reply) for key, reply in zip(keys, replies, strict=True)]

    def _bandit_key(self, policy: str, scope: str) -> str:
        key = self._bandit_keys.get((policy, scope))
        if key is None:
            if len(self._bandit_keys) >= _MAX_BANDIT_KEYS:
                self._bandit_keys.clear()
            key = self._bandit_keys[policy, scope] = self.keys.bandit(policy, scope)
        return key

    def _bandit_envelope(self, key: str, reply: Any) -> Envelope | None:
        raw = tuple(reply) if isinstance(reply, list) else tuple(sorted(reply.items()))
        known = self._bandits.get(key)
        if known is not None and known[0] == raw:
            return known[1]
        envelope = _envelope(key, _as_mapping(reply))
        if len(self._bandits) >= _MAX_BANDIT_KEYS:
            self._bandits.clear()  # user scopes: bounded, and the live ones come straight back
        self._bandits[key] = (raw, envelope)
        return envelope

    async def delete(self, keys: Sequence[str]) -> int:
        """``DEL`` the keys; returns how many existed."""
        return int(await self._guard(lambda: self.client.delete(*keys)))

    async def append_log(self, key: str, fields: dict[str, str], max_entries: int) -> str:
        """``XADD`` one entry to a stream, trimmed to about ``max_entries``; returns the entry id."""
        values: dict[Any, Any] = dict(fields)  # redis-py's stub wants its own key/value union
        entry = await self._guard(lambda: self.client.xadd(key, values, maxlen=max_entries, approximate=True))
        return entry.decode() if isinstance(entry, bytes) else str(entry)

    async def _guard(self, action: Callable[[], Awaitable[_T]]) -> _T:
        try:
            return await action()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise StoreUnavailableError(f"Redis did not answer ({type(exc).__name__})") from exc
        except RedisError as exc:
            raise StoreError(f"Redis error ({type(exc).__name__}: {exc})") from exc
