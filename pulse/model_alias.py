"""Which Redis prefix serving reads: the alias ``pulse model promote`` / ``rollback`` switch.

The deployment's own prefix (``PULSE_REDIS_PREFIX``) holds the alias: ``<prefix>:{live}`` names
the live prefix (absent: the deployment's own), ``<prefix>:{live}:history`` the ones before it
(newest first) and ``<prefix>:{live}:log`` a stream of every switch (who, from, to, when). Each
switch is one Lua script, so it is atomic; every serving worker polls the alias
(``PULSE_SERVING_ALIAS_REFRESH_S``) and reads the new prefix from its next request on
(``serving/alias.py``). A prefix is filled by a job run with ``PULSE_REDIS_PREFIX=<new>`` (a new
model, new settings, a backfill), so promoting it is the switch and rolling back is the way back.
"""

from __future__ import annotations

import getpass
import time
from dataclasses import dataclass

import redis

from schemas.redis_keys import RedisKeys

__all__ = ["AliasError", "Switch", "live_prefix", "promote", "rollback"]

#: KEYS = live, history, log; ARGV = new prefix, own prefix, time ms, who, history length.
_PROMOTE = """\
local current = redis.call('GET', KEYS[1]) or ARGV[2]
if current == ARGV[1] then
  return {current, 0}
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('LPUSH', KEYS[2], current)
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[5]) - 1)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', 1000, '*', 'action', 'promote', 'from', current, 'to', ARGV[1],
           'at_ms', ARGV[3], 'by', ARGV[4])
return {current, 1}
"""

#: KEYS = live, history, log; ARGV = own prefix, time ms, who.
_ROLLBACK = """\
local previous = redis.call('LPOP', KEYS[2])
if not previous then
  return false
end
local current = redis.call('GET', KEYS[1]) or ARGV[1]
redis.call('SET', KEYS[1], previous)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', 1000, '*', 'action', 'rollback', 'from', current, 'to', previous,
           'at_ms', ARGV[2], 'by', ARGV[3])
return {current, previous}
"""

HISTORY = 20


class AliasError(RuntimeError):
    """A switch that cannot be made (nothing to roll back to, an empty prefix)."""


@dataclass(frozen=True)
class Switch:
    """What a promote or rollback did."""

    before: str
    after: str
    changed: bool


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def live_prefix(client: redis.Redis, home: RedisKeys) -> str:
    """The prefix serving reads now."""
    value = client.get(home.live())
    return home.prefix if value is None else _text(value)  # type: ignore[arg-type]


def promote(client: redis.Redis, home: RedisKeys, prefix: str, *, force: bool = False) -> Switch:
    """Make ``prefix`` live for every serving worker; refused when nothing was learned there (unless ``force``)."""
    target = RedisKeys(prefix)  # the same rules as PULSE_REDIS_PREFIX
    if not force and not client.exists(target.model("mf")):
        raise AliasError(f"prefix {prefix!r} has no model metadata ({target.model('mf')}): no job has written "
                         "there; run one with PULSE_REDIS_PREFIX={prefix} first, or pass --force")
    before, changed = client.eval(_PROMOTE, 3, home.live(), home.live("history"), home.live("log"),  # type: ignore[misc]
                                  target.prefix, home.prefix, _now_ms(), _who(), HISTORY)
    return Switch(_text(before), target.prefix, bool(changed))


def rollback(client: redis.Redis, home: RedisKeys) -> Switch:
    """Make the prefix live before the last promote live again."""
    result = client.eval(_ROLLBACK, 3, home.live(), home.live("history"), home.live("log"),  # type: ignore[misc]
                         home.prefix, _now_ms(), _who())
    if not result:
        raise AliasError(f"nothing to roll back to: {home.live('history')} is empty")
    before, after = result
    return Switch(_text(before), _text(after), True)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return "unknown"
