"""The Lua scripts of the Redis writer (``redis_writer.py``): every write is event-time guarded.

Each script is loaded once per connection and called by its SHA-1 (``EVALSHA``).
"""

from __future__ import annotations

import hashlib

__all__ = ["ADD_MEMBER_LUA", "ADD_MEMBER_SCRIPT_SHA", "CATALOGUE_SCRIPT_SHA",
           "GUARDED_CATALOGUE_LUA", "GUARDED_SET_LUA", "GUARDED_WRITE_LUA", "SCRIPTS",
           "SCRIPT_SHA", "SET_SCRIPT_SHA"]

#: KEYS[1] = key; ARGV = event time ms, orjson value, write time ms, model version.
#: Returns 1 when written, 0 when the stored event time is newer (stale write skipped).
GUARDED_WRITE_LUA = """\
local stored = tonumber(redis.call('HGET', KEYS[1], 'et'))
if stored and stored > tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'et', ARGV[1], 'wt', ARGV[3], 'mv', ARGV[4])
return 1
"""
SCRIPT_SHA = hashlib.sha1(GUARDED_WRITE_LUA.encode()).hexdigest()

#: The same guard for a format-2 string (:mod:`schemas.redis_values`): its bytes 1..8 are the
#: event time, big-endian. KEYS[1] = key; ARGV = event time ms, whole value, TTL ms (0: none).
GUARDED_SET_LUA = """\
local head = redis.call('GETRANGE', KEYS[1], 0, 8)
if #head == 9 then
  local stored = 0
  for i = 2, 9 do stored = stored * 256 + string.byte(head, i) end
  if stored > tonumber(ARGV[1]) then
    return 0
  end
end
if tonumber(ARGV[3]) > 0 then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[2])
end
return 1
"""
SET_SCRIPT_SHA = hashlib.sha1(GUARDED_SET_LUA.encode()).hexdigest()

#: A catalogue entry (:class:`~schemas.redis_values.CatalogueValue`) under the same guard as
#: :data:`GUARDED_WRITE_LUA`, and the catalogue's indexes serving reads whole, in one step:
#: KEYS = entry, unavailable set, category hash, version counter; ARGV = the four envelope
#: fields as in GUARDED_WRITE_LUA, then item id, available ("1"/"0"), category ("": none).
#: The version is bumped only when an index changed, so serving reloads only then.
GUARDED_CATALOGUE_LUA = """\
local stored = tonumber(redis.call('HGET', KEYS[1], 'et'))
if stored and stored > tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'et', ARGV[1], 'wt', ARGV[3], 'mv', ARGV[4])
local changed = 0
if ARGV[6] == '1' then
  changed = changed + redis.call('SREM', KEYS[2], ARGV[5])
else
  changed = changed + redis.call('SADD', KEYS[2], ARGV[5])
end
if ARGV[7] == '' then
  changed = changed + redis.call('HDEL', KEYS[3], ARGV[5])
elseif redis.call('HGET', KEYS[3], ARGV[5]) ~= ARGV[7] then
  redis.call('HSET', KEYS[3], ARGV[5], ARGV[7])
  changed = changed + 1
end
if changed > 0 then
  redis.call('INCR', KEYS[4])
end
return 1
"""
CATALOGUE_SCRIPT_SHA = hashlib.sha1(GUARDED_CATALOGUE_LUA.encode()).hexdigest()
#: A member added to a set (:class:`flink_jobs.messages.SetMember`): KEYS[1] = set, ARGV[1] = member.
#: A script like the others so one pipeline of EVALSHA carries every kind of write.
ADD_MEMBER_LUA = """\
redis.call('SADD', KEYS[1], ARGV[1])
return 1
"""
ADD_MEMBER_SCRIPT_SHA = hashlib.sha1(ADD_MEMBER_LUA.encode()).hexdigest()
SCRIPTS = {SCRIPT_SHA: GUARDED_WRITE_LUA, SET_SCRIPT_SHA: GUARDED_SET_LUA,
           CATALOGUE_SCRIPT_SHA: GUARDED_CATALOGUE_LUA, ADD_MEMBER_SCRIPT_SHA: ADD_MEMBER_LUA}
