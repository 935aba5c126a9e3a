"""The Redis writer of the job's sink (``redis_sink.py``): pipelined, replay-safe, event-time guarded writes.

Every value is written by a small Lua script that sets the envelope hash (``v``, ``et``, ``wt``,
``mv``; see :mod:`schemas.redis_keys`), or for a :class:`~schemas.redis_values.CompactValue` the
format-2 string (event time in its header), only when the stored ``et`` is absent or not newer than the
new event time, so a write never moves a key backwards in event time and a replay after recovery
(same event time) simply overwrites. One batch is one pipeline (no MULTI) of ``EVALSHA`` calls;
the script is loaded once and loaded again when Redis answers ``NOSCRIPT`` (after a restart or
``SCRIPT FLUSH``). Connection errors and timeouts are retried with exponential backoff for a
bounded time, then :class:`RedisUnavailableError` is raised. One debug line per flush says how
many keys and how long. ADR: docs/adr/0003-redis-key-scheme.md.

The writer builds its Redis client on first use (or in :meth:`RedisWriter.open`), never in
``__init__``, and pickles without it, so it can be created on the client and shipped inside a
PyFlink function:

>>> from schemas.redis_keys import RedisKeys
>>> writer = RedisWriter(RedisKeys("pulse"), "mf-1", url="redis://:hunter2@127.0.0.1:6379/0", password="s3cret")
>>> writer
RedisWriter(url='redis://:***@127.0.0.1:6379/0', prefix='pulse', model_version='mf-1', password=***)
>>> import pickle
>>> pickle.loads(pickle.dumps(writer)).model_version
'mf-1'
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Self, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

import redis
from pydantic import SecretStr
from redis.exceptions import AuthenticationError, AuthorizationError, NoScriptError
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_before_delay, wait_exponential

from flink_jobs.messages import SetMember
from flink_jobs.redis_scripts import (
    ADD_MEMBER_SCRIPT_SHA,
    CATALOGUE_SCRIPT_SHA,
    GUARDED_CATALOGUE_LUA,
    GUARDED_SET_LUA,
    GUARDED_WRITE_LUA,
    SCRIPT_SHA,
    SCRIPTS,
    SET_SCRIPT_SHA,
)
from schemas.redis_keys import (
    CATALOGUE_INDEXES,
    FIELD_EVENT_TIME,
    FIELD_MODEL_VERSION,
    FIELD_VALUE,
    FIELD_WRITE_TIME,
    Envelope,
    RedisKeys,
)
from schemas.redis_values import CatalogueValue, CompactValue, with_header

__all__ = [
    "GUARDED_CATALOGUE_LUA",
    "GUARDED_SET_LUA",
    "GUARDED_WRITE_LUA",
    "BatchItem",
    "FlushResult",
    "RedisSinkError",
    "RedisUnavailableError",
    "RedisWriter",
    "RetryPolicy",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T")


class BatchItem(NamedTuple):
    """One value to write; the payload is anything orjson encodes (a plain 3-tuple is accepted too)."""

    key: str
    event_time_ms: int
    payload: Any


class _Prepared(NamedTuple):
    """A :class:`BatchItem` encoded: the key, which script writes it and that script's ARGV."""

    key: str
    script: str
    args: tuple[bytes | int | str, ...]
    more_keys: tuple[str, ...] = ()  # KEYS[2..] of the script (the catalogue's indexes)


_ARGV_FIELDS = (FIELD_EVENT_TIME, FIELD_VALUE, FIELD_WRITE_TIME, FIELD_MODEL_VERSION)  # ARGV[1..4] of the scripts



class RedisSinkError(RuntimeError):
    """A write to Redis failed for a reason retrying will not fix (wrong key type, bad password, ...)."""


class RedisUnavailableError(RedisSinkError):
    """Redis did not answer within the retry budget."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff on connection errors and timeouts, bounded in total time.

    Waits ``initial_wait_s``, doubling up to ``max_wait_s``; no new attempt starts once
    ``total_s`` would be exceeded (the last attempt can still take up to the socket timeout).
    """

    initial_wait_s: float = 0.05
    max_wait_s: float = 2.0
    total_s: float = 30.0


@dataclass(frozen=True, slots=True)
class FlushResult:
    """What one :meth:`RedisWriter.write_batch` did."""

    written: int
    skipped_stale: int
    elapsed_s: float

    @property
    def keys(self) -> int:
        """Number of keys in the batch."""
        return self.written + self.skipped_stale


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def _redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``.

    >>> _redact_url("redis://user:pw@host:6379/0"), _redact_url("redis://127.0.0.1:6379/0")
    ('redis://user:***@host:6379/0', 'redis://127.0.0.1:6379/0')
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, AuthenticationError | AuthorizationError):
        return False  # retrying a wrong password only delays the error
    return isinstance(exc, redis.ConnectionError | redis.TimeoutError)


class RedisWriter:
    """Writes envelopes under :class:`~schemas.redis_keys.RedisKeys` keys; one pipeline per batch.

    Give either ``url`` (without or with credentials) and optionally ``password``, or a
    ``client_factory`` returning a ``redis.Redis`` (it must be picklable to ship the writer to
    Flink; cloudpickle handles lambdas). The client is built on first use.
    """

    def __init__(
        self,
        keys: RedisKeys,
        model_version: str,
        *,
        url: str | None = None,
        password: str | SecretStr | None = None,
        connection_options: Mapping[str, str] | None = None,
        client_factory: Callable[[], redis.Redis] | None = None,
        retry: RetryPolicy | None = None,
        socket_timeout_s: float = 5.0,
        clock_ms: Callable[[], int] = _wall_clock_ms,
    ) -> None:
        if (url is None) == (client_factory is None):
            raise ValueError("give exactly one of url (with optional password) or client_factory")
        if client_factory is not None and password is not None:
            raise ValueError("password goes with url; a client_factory configures its own client")
        if not model_version:
            raise ValueError("model_version must not be empty")
        self.keys = keys
        self.model_version = str(model_version)
        self.retry = retry or RetryPolicy()
        self._url = url
        self._password = password if isinstance(password, SecretStr) or password is None else SecretStr(password)
        self._client_factory = client_factory
        self._connection_options = dict(connection_options or {})
        self._socket_timeout_s = socket_timeout_s
        self._clock_ms = clock_ms
        self._client: redis.Redis | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def open(self) -> Self:
        """Build the client and load the script (idempotent); called by the first write if not before."""
        if self._client is None:
            self._client = self._build_client()
            try:
                self._call("open", self._load_script)
            except BaseException:
                self.close()
                raise
        return self

    def close(self) -> None:
        """Close the client; the next write opens a new one."""
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_client"] = None  # connections do not travel; the copy opens its own
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        target = _redact_url(self._url) if self._url is not None else "<client_factory>"
        secret = "***" if self._password is not None else "None"
        return (f"RedisWriter(url={target!r}, prefix={self.keys.prefix!r}, "
                f"model_version={self.model_version!r}, password={secret})")

    __str__ = __repr__

    # -- writes --------------------------------------------------------------------------------

    def write_batch(self, items: Sequence[BatchItem | tuple[str, int, Any]]) -> FlushResult:
        """Write every ``(key, event_time_ms, payload)`` in one pipeline; stale ones are skipped.

        A key whose stored event time is newer keeps its value (counted in ``skipped_stale``);
        equal or older stored event time is overwritten. Raises ``TypeError`` for an item that
        cannot be encoded (before anything is sent), :class:`RedisUnavailableError` when Redis
        stays unreachable, :class:`RedisSinkError` for any other failure. A retried batch is
        sent again whole, which the event-time guard makes harmless.
        """
        started = time.perf_counter()
        prepared = self._prepare(items)
        outcomes: list[int] = []
        if prepared:
            self.open()
            outcomes = self._call("write_batch", lambda: self._send(prepared))
        written = sum(outcomes)
        result = FlushResult(written, len(prepared) - written, time.perf_counter() - started)
        log.debug("redis flush: %d keys (%d written, %d stale) in %.1f ms",
                  result.keys, result.written, result.skipped_stale, result.elapsed_s * 1000)
        return result

    def write_plain(self, key: str, payload: Any, event_time_ms: int) -> None:
        """Write one envelope unconditionally (no event-time guard), e.g. to reset model metadata."""
        fields = Envelope(payload, event_time_ms, self._clock_ms(), self.model_version).to_fields()
        self.open()
        self._call("write_plain", lambda: self._require_client().hset(key, mapping=fields))

    def delete_user(self, user_id: str) -> int:
        """Delete every key of one user in one ``DEL`` (all share a cluster slot); returns how many existed."""
        keys = self.keys.user_keys(user_id)
        self.open()
        deleted = self._call("delete_user", lambda: self._require_client().delete(*keys))
        return int(cast(int, deleted))

    def delete_keys(self, keys: Sequence[str]) -> int:
        """Delete ``keys`` in one ``DEL``; returns how many existed."""
        self.open()
        deleted = self._call("delete_keys", lambda: self._require_client().delete(*keys))
        return int(cast(int, deleted))

    # -- internals -----------------------------------------------------------------------------

    def _build_client(self) -> redis.Redis:
        if self._client_factory is not None:
            return self._client_factory()
        assert self._url is not None
        password = self._password.get_secret_value() if self._password is not None else None
        extra: dict[str, Any] = {"password": password} if password is not None else {}
        extra.update(self._connection_options)  # e.g. ssl_ca_certs for rediss://
        return redis.Redis.from_url(self._url, socket_timeout=self._socket_timeout_s,
                                    socket_connect_timeout=self._socket_timeout_s, **extra)

    def _require_client(self) -> redis.Redis:
        if self._client is None:
            raise RedisSinkError("RedisWriter is closed")
        return self._client

    def _load_script(self) -> None:
        client = self._require_client()
        for expected, script in SCRIPTS.items():
            sha = client.script_load(script)
            if sha != expected:
                raise RedisSinkError(f"Redis returned sha {sha!r} for the write script, expected {expected}")

    def _prepare(self, items: Sequence[BatchItem | tuple[str, int, Any]]) -> list[_Prepared]:
        write_time = self._clock_ms()
        prepared = []
        for key, event_time_ms, payload in items:
            if isinstance(payload, CompactValue):  # format 2: one string, header added here
                if not isinstance(event_time_ms, int) or isinstance(event_time_ms, bool):
                    raise TypeError(f"cannot write {key!r}: event_time_ms must be an int of milliseconds")
                value = with_header(payload.body, event_time_ms, write_time, self.model_version)
                prepared.append(_Prepared(key, SET_SCRIPT_SHA, (event_time_ms, value, payload.expire_ms)))
                continue
            if isinstance(payload, CatalogueValue):
                prepared.append(self._catalogue(key, event_time_ms, payload, write_time))
                continue
            if isinstance(payload, SetMember):
                prepared.append(_Prepared(key, ADD_MEMBER_SCRIPT_SHA, (payload.member,)))
                continue
            try:
                fields = Envelope(payload, event_time_ms, write_time, self.model_version).to_fields()
            except TypeError as exc:
                raise TypeError(f"cannot write {key!r}: {exc}") from exc
            prepared.append(_Prepared(key, SCRIPT_SHA, tuple(fields[name] for name in _ARGV_FIELDS)))
        return prepared

    def _catalogue(self, key: str, event_time_ms: int, entry: CatalogueValue, write_time: int) -> _Prepared:
        fields = Envelope(entry.payload(), event_time_ms, write_time, self.model_version).to_fields()
        args = (*(fields[name] for name in _ARGV_FIELDS), entry.item_id, "1" if entry.available else "0",
                entry.category or "")
        return _Prepared(key, CATALOGUE_SCRIPT_SHA, args,
                         tuple(self.keys.catalogue_index(name) for name in CATALOGUE_INDEXES))

    def _send(self, prepared: list[_Prepared]) -> list[int]:
        """One pipeline of EVALSHA; the ones answered NOSCRIPT are sent again after reloading the script."""
        client = self._require_client()
        outcomes = [0] * len(prepared)
        pending = list(range(len(prepared)))
        for _ in range(2):
            pipe = client.pipeline(transaction=False)
            for i in pending:
                item = prepared[i]
                pipe.evalsha(item.script, 1 + len(item.more_keys), item.key, *item.more_keys, *item.args)
            replies = pipe.execute(raise_on_error=False)
            missing = []
            for i, reply in zip(pending, replies, strict=True):
                if isinstance(reply, NoScriptError):
                    missing.append(i)
                elif _transient(reply):
                    raise reply  # e.g. LOADING after a restart: let the retry policy wait
                elif isinstance(reply, BaseException):
                    raise RedisSinkError(f"writing {prepared[i].key!r} failed: {reply}") from reply
                else:
                    outcomes[i] = int(reply)
            if not missing:
                return outcomes
            log.info("redis write script missing (Redis restarted or SCRIPT FLUSH); loading it again")
            self._load_script()
            pending = missing
        raise RedisSinkError("redis write script still missing right after loading it")

    def _call(self, what: str, action: Callable[[], _T]) -> _T:
        policy = self.retry
        retrying = Retrying(
            stop=stop_before_delay(policy.total_s),
            wait=wait_exponential(multiplier=policy.initial_wait_s, max=policy.max_wait_s),
            retry=retry_if_exception(_transient),
            before_sleep=lambda state: self._log_retry(what, state),
            reraise=True,
        )
        started = time.monotonic()
        try:
            return retrying(action)
        except (AuthenticationError, AuthorizationError) as exc:
            raise RedisSinkError(f"{what}: Redis at {self._target()} refused the credentials: {exc}") from exc
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            attempts = retrying.statistics.get("attempt_number", 1)
            raise RedisUnavailableError(
                f"{what}: Redis at {self._target()} unreachable after {attempts} attempt(s) in "
                f"{time.monotonic() - started:.1f}s ({type(exc).__name__}: {exc})") from exc
        except redis.RedisError as exc:
            raise RedisSinkError(f"{what}: {type(exc).__name__}: {exc}") from exc

    def _log_retry(self, what: str, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        log.warning("%s: attempt %d against Redis at %s failed (%s: %s); retrying in %.2fs",
                    what, state.attempt_number, self._target(), type(exc).__name__, exc, wait)

    def _target(self) -> str:
        return _redact_url(self._url) if self._url is not None else "<client_factory>"
