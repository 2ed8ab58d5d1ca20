//! The Lua scripts: every state change of the shared queue is one script,
//! so that a webhook is never in two places, and never in none.
//!
//! Keys (all under one hash tag, so that the scripts run on Redis Cluster):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `seq` | string | the last key handed out |
//! | `jobs` | hash | key → the webhook and its state, JSON |
//! | `ready` | list | keys waiting for a worker, oldest at the right |
//! | `delayed` | sorted set | keys waiting for a retry or a pause, by due time (ms) |
//! | `claims:<worker>` | set | keys a worker process has taken |
//! | `workers` | sorted set | worker process → its last heartbeat (ms) |
//! | `deaths` | hash | key → times its worker died holding it |
//! | `letters` | hash | key → the dead letter, JSON |
//! | `dead` | sorted set | keys of dead letters, by when (ms) |
//!
//! Times are the Redis server's (`TIME`), so the clocks of the machines
//! that share the queue never matter.

/// `TIME` in milliseconds.
const NOW: &str =
    "local t = redis.call('TIME'); local now = t[1] * 1000 + math.floor(t[2] / 1000)\n";

/// KEYS: seq, jobs, ready. ARGV: job JSON, ... Returns the keys given.
pub(crate) const ENQUEUE: &str = "
local out = {}
for i = 1, #ARGV do
  local k = redis.call('INCR', KEYS[1])
  redis.call('HSET', KEYS[2], k, ARGV[i])
  redis.call('LPUSH', KEYS[3], k)
  out[i] = k
end
return out
";

/// KEYS: ready, delayed, jobs, claims, workers. ARGV: worker, max.
/// Promotes due retries to the front of `ready`, then takes up to `max`
/// keys into the worker's claims. Returns `{-1}` if the worker is not
/// registered (it was declared dead: register again), else
/// `{key, job, key, job, ...}`.
pub(crate) fn claim() -> String {
    format!(
        "{NOW}
if not redis.call('ZSCORE', KEYS[5], ARGV[1]) then return {{-1}} end
local max = tonumber(ARGV[2])
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, max)
for i = 1, #due do
  redis.call('ZREM', KEYS[2], due[i])
  redis.call('RPUSH', KEYS[1], due[i])
end
local out = {{}}
local keys = redis.call('RPOP', KEYS[1], max)
if not keys then return out end
for i = 1, #keys do
  local job = redis.call('HGET', KEYS[3], keys[i])
  if job then
    redis.call('SADD', KEYS[4], keys[i])
    out[#out + 1] = keys[i]
    out[#out + 1] = job
  end
end
return out
"
    )
}

/// KEYS: claims, jobs, deaths. ARGV: key, ... Delivered: removes each key
/// the worker still holds. Returns how many it held (the rest were
/// reclaimed from it: a late result, not counted).
pub(crate) const ACK: &str = "
local n = 0
for i = 1, #ARGV do
  if redis.call('SREM', KEYS[1], ARGV[i]) == 1 then
    redis.call('HDEL', KEYS[2], ARGV[i])
    redis.call('HDEL', KEYS[3], ARGV[i])
    n = n + 1
  end
end
return n
";

/// KEYS: claims, jobs, delayed. ARGV: key, job, due (ms; 0: now), ...
/// A retry, a deferral or a pause: the job's new state, and the key into
/// `delayed` (from where any worker may claim it when due). Only for keys
/// the worker still holds. Returns how many.
pub(crate) fn schedule() -> String {
    format!(
        "{NOW}
local n = 0
for i = 1, #ARGV, 3 do
  if redis.call('SREM', KEYS[1], ARGV[i]) == 1 then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
    local due = tonumber(ARGV[i + 2])
    if due < now then due = now end
    redis.call('ZADD', KEYS[3], due, ARGV[i])
    n = n + 1
  end
end
return n
"
    )
}

/// KEYS: claims, jobs, letters, dead, deaths. ARGV: key, letter, ...
/// Dead-lettered: the job moves to the dead letters. Only for keys the
/// worker still holds. Returns how many.
pub(crate) fn bury() -> String {
    format!(
        "{NOW}
local n = 0
for i = 1, #ARGV, 2 do
  if redis.call('SREM', KEYS[1], ARGV[i]) == 1 then
    redis.call('HDEL', KEYS[2], ARGV[i])
    redis.call('HDEL', KEYS[5], ARGV[i])
    redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
    redis.call('ZADD', KEYS[4], now, ARGV[i])
    n = n + 1
  end
end
return n
"
    )
}

/// KEYS: claims, ready. ARGV: key, ... Taken but not started: back to the
/// front of `ready`. Returns how many.
pub(crate) const RELEASE: &str = "
local n = 0
for i = #ARGV, 1, -1 do
  if redis.call('SREM', KEYS[1], ARGV[i]) == 1 then
    redis.call('RPUSH', KEYS[2], ARGV[i])
    n = n + 1
  end
end
return n
";

/// KEYS: workers. ARGV: worker. Returns 1 if it was registered, 0 if not
/// (new, or declared dead and its claims taken back); registered after.
pub(crate) fn heartbeat() -> String {
    format!(
        "{NOW}
local was = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], now, ARGV[1])
if was then return 1 else return 0 end
"
    )
}

/// KEYS: workers, ready, jobs, letters, dead, deaths. ARGV: ttl (ms), max
/// deaths, prefix of the claims keys. Every worker silent for longer than
/// the ttl is declared dead: each key it held goes back to the front of
/// `ready`, or, if workers died holding it `max deaths` times, to the dead
/// letters (`worker_lost`). Returns `{workers, returned, buried}`.
pub(crate) fn reclaim() -> String {
    format!(
        "{NOW}
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]))
local returned, buried = 0, 0
for i = 1, #gone do
  local claims = ARGV[3] .. gone[i]
  local keys = redis.call('SMEMBERS', claims)
  for j = 1, #keys do
    local k = keys[j]
    local deaths = redis.call('HINCRBY', KEYS[6], k, 1)
    local job = redis.call('HGET', KEYS[3], k)
    if job and deaths >= tonumber(ARGV[2]) then
      local letter = cjson.decode(job)
      letter['reason'] = 'worker_lost'
      letter['error'] = 'the worker process holding it stopped ' .. deaths .. ' times (killed, or silent past its ttl)'
      letter['dead_lettered_at'] = now
      redis.call('HDEL', KEYS[3], k)
      redis.call('HDEL', KEYS[6], k)
      redis.call('HSET', KEYS[4], k, cjson.encode(letter))
      redis.call('ZADD', KEYS[5], now, k)
      buried = buried + 1
    elseif job then
      redis.call('RPUSH', KEYS[2], k)
      returned = returned + 1
    end
  end
  redis.call('DEL', claims)
  redis.call('ZREM', KEYS[1], gone[i])
end
return {{#gone, returned, buried}}
"
    )
}

/// KEYS: ready, delayed, dead, workers. ARGV: ttl (ms), prefix of the
/// claims keys. Returns `{ready, delayed, processing, dead, workers alive}`.
pub(crate) fn status() -> String {
    format!(
        "{NOW}
local workers = redis.call('ZRANGE', KEYS[4], 0, -1)
local processing = 0
for i = 1, #workers do
  processing = processing + redis.call('SCARD', ARGV[2] .. workers[i])
end
local alive = redis.call('ZCOUNT', KEYS[4], now - tonumber(ARGV[1]), '+inf')
return {{redis.call('LLEN', KEYS[1]), redis.call('ZCARD', KEYS[2]), processing,
        redis.call('ZCARD', KEYS[3]), alive}}
"
    )
}

/// KEYS: dead, letters, jobs, ready. ARGV: key, accepted (ms). A dead
/// letter back into the queue, at the front, as a webhook accepted anew
/// (as the journal does it): attempts, pace and errors reset, and
/// `max_elapsed` counting from `accepted`. Returns 1, or 0 if there is no
/// such letter.
pub(crate) const REVIVE: &str = "
local letter = redis.call('HGET', KEYS[2], ARGV[1])
if not letter then return 0 end
local job = cjson.decode(letter)
job['reason'] = nil
job['error'] = nil
job['dead_lettered_at'] = nil
job['attempts'] = 0
job['push_backs'] = 0
job['paced_ms'] = 0
job['accepted_ms'] = tonumber(ARGV[2])
job['first_attempt_ms'] = nil
job['last_attempt_ms'] = nil
job['last_error'] = nil
job['last_status'] = nil
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], cjson.encode(job))
redis.call('RPUSH', KEYS[4], ARGV[1])
return 1
";

/// KEYS: dead, letters. ARGV: key, ... Returns how many there were.
pub(crate) const DELETE_LETTERS: &str = "
local n = 0
for i = 1, #ARGV do
  if redis.call('ZREM', KEYS[1], ARGV[i]) == 1 then n = n + 1 end
  redis.call('HDEL', KEYS[2], ARGV[i])
end
return n
";
