"""The Lua scripts of the Redis store: one call per counter shard, keys of
one hash slot only (see ``redis`` and ``redis_keys``)."""

# Sessions of one shard: KEYS[1] = the shard's counts hash; ARGV = the
# shard's key prefix, session ttl, dedupe ttl, and the events as one JSON
# array of 9-value arrays.  A session's state follows the newest event of
# each kind, whatever the order they arrive in ("mark" = zero-padded event
# time in microseconds, "|", event id: the contract's newest-wins order as
# one comparable string); an ended session stays ended, and is never
# counted as watching again.  Increments run only when the event's dedupe
# claim (SET NX) is new.  Returns the shard's "most watched" count of every
# title started in the call, claimed or not, for the global board.
SESSIONS = """
local base, session_ttl, dedupe_ttl = ARGV[1], ARGV[2], ARGV[3]
local counts, watching, shard_board = KEYS[1], base .. 'watching', base .. 'lb:watched'
local started = {}
local function newer(skey, field, mark)
  local held = redis.call('HGET', skey, field)
  if held and held >= mark then return false end
  redis.call('HSET', skey, field, mark)
  return true
end
for _, e in ipairs(cjson.decode(ARGV[4])) do
  local kind, eid, sid, movie = e[1], e[2], e[3], e[4]
  local user, at, seen, extra, mark = e[5], e[6], e[7], e[8], e[9]
  local skey, per_title = base .. 'session:' .. sid, base .. 'watching:' .. movie
  redis.call('HSET', skey, 'user_id', user, 'movie_id', movie)
  if newer(skey, 'last_mark', mark) then
    redis.call('HSET', skey, 'last_seen', at)
  end
  if kind == 'session.ended' then
    if newer(skey, 'end_mark', mark) then
      redis.call('HSET', skey, 'watched_s', extra, 'ended_at', at)
    end
    redis.call('HSET', skey, 'state', 'ended')
    redis.call('ZREM', watching, sid)
    redis.call('ZREM', per_title, sid)
  else
    if kind == 'session.started' then
      if newer(skey, 'start_mark', mark) then
        redis.call('HSET', skey, 'device', extra, 'started_at', at)
      end
      started[movie] = true
    elseif newer(skey, 'beat_mark', mark) then
      redis.call('HSET', skey, 'position_s', extra)
    end
    if redis.call('HGET', skey, 'state') ~= 'ended' then
      redis.call('HSET', skey, 'state', 'playing')
      redis.call('ZADD', watching, 'GT', seen, sid)
      redis.call('ZADD', per_title, 'GT', seen, sid)
    end
  end
  redis.call('EXPIRE', skey, session_ttl)
  if redis.call('SET', base .. 'seen:' .. eid, '1', 'NX', 'EX', dedupe_ttl) then
    redis.call('HINCRBY', counts, kind, 1)
    if kind == 'session.started' then
      redis.call('ZINCRBY', shard_board, 1, movie)
    elseif kind == 'session.ended' then
      redis.call('HINCRBY', counts, 'watched_seconds', extra)
    end
  end
end
local scores = {}
for movie, _ in pairs(started) do
  table.insert(scores, movie)
  table.insert(scores, redis.call('ZSCORE', shard_board, movie))
end
return scores
"""

# Count events of one shard once each: KEYS[1] = the shard's counts hash;
# ARGV = the shard's key prefix, dedupe ttl, and a JSON array of
# [event id, type] pairs.
COUNT = """
local base, dedupe_ttl = ARGV[1], ARGV[2]
local counted = 0
for _, e in ipairs(cjson.decode(ARGV[3])) do
  if redis.call('SET', base .. 'seen:' .. e[1], '1', 'NX', 'EX', dedupe_ttl) then
    counted = counted + 1
    redis.call('HINCRBY', KEYS[1], e[2], 1)
  end
end
return counted
"""
