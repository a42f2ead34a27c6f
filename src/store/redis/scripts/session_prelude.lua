-- Helpers the session scripts share (placed before each of them). A
-- session's keys are four: its hash, lease, checkpoint and hold keys; `k`
-- below is such a list.

-- Compares two decimal strings without leading zeros as the numbers they
-- spell (a Lua number holds only 53 bits).
local function cmp(a, b)
  if #a ~= #b then
    if #a < #b then return -1 end
    return 1
  end
  for i = 1, #a do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then
      if x < y then return -1 end
      return 1
    end
  end
  return 0
end

-- Renews the session's hash and checkpoint.
local function touch(k, ttl)
  redis.call('PEXPIRE', k[1], ttl)
  redis.call('PEXPIRE', k[3], ttl)
end

-- The keys of the `i`-th session of a batch (from 1).
local function session_keys(i)
  local b = 4 * (i - 1)
  return {KEYS[b + 1], KEYS[b + 2], KEYS[b + 3], KEYS[b + 4]}
end

-- Asks for number `seq`'s turn of session `k` with a lease of `lease` ms
-- (session TTL `ttl` ms). Returns {code, next}: 0 run, 1 early, 2 stale,
-- 3 skipped, 4 busy (the session is then held for the number for the
-- lease).
local function begin(k, seq, lease, ttl)
  local nxt = redis.call('HGET', k[1], 'next')
  if not nxt then
    nxt = '1'
    redis.call('HSET', k[1], 'next', nxt)
    redis.call('PEXPIRE', k[1], ttl)
  end
  -- An existing session is kept alive by its turns' ends (`touch`).
  local c = cmp(seq, nxt)
  if c < 0 then
    local gaps = redis.call('HGET', k[1], 'gaps')
    if gaps then
      for from, to in string.gmatch(gaps, '(%d+)-(%d+)') do
        if cmp(from, seq) <= 0 and cmp(seq, to) < 0 then return {3, nxt} end
      end
    end
    return {2, nxt}
  end
  if c > 0 then
    local early = redis.call('HGET', k[1], 'early')
    if not early or cmp(early, nxt) <= 0 or cmp(seq, early) < 0 then
      redis.call('HSET', k[1], 'early', seq)
    end
    local latest = redis.call('HGET', k[1], 'latest')
    if not latest or cmp(latest, nxt) <= 0 or cmp(seq, latest) > 0 then
      redis.call('HSET', k[1], 'latest', seq)
    end
    return {1, nxt}
  end
  if redis.call('SET', k[2], seq, 'NX', 'PX', lease) then
    redis.call('DEL', k[4])
    return {0, nxt}
  end
  -- Leased by another delivery of it: busy.
  if redis.call('PTTL', k[4]) < tonumber(lease) then
    redis.call('SET', k[4], seq, 'PX', lease)
  end
  return {4, nxt}
end

-- Ends number `seq`'s turn of session `k`: finished (`after` is the next
-- number) or aborted (`after` empty; held for `hold` ms if above 0).
-- Publishes the session's name on `channel` when its lease ended or it
-- moved and another worker may wait for it: a number of it was ever
-- reported early (`early`/`latest` set: its numbers are spread over
-- workers, not all of them reported), or the session is held (a busy
-- number, or a retry, comes back). Returns 1, or 0 for an unknown session.
local function finish(k, seq, after, ttl, channel, name, hold)
  local r = redis.call('HMGET', k[1], 'next', 'early', 'latest')
  local changed = false
  if redis.call('GET', k[2]) == seq then
    redis.call('DEL', k[2])
    changed = true
  end
  if not r[1] then return 0 end
  local held = redis.call('GET', k[4])
  local waited = held or r[2] or r[3]
  local waits_for_it = r[1] == seq
  if after ~= '' then
    if waits_for_it then
      redis.call('HSET', k[1], 'next', after)
      changed = true
    end
    if held == seq then redis.call('DEL', k[4]) end
  elseif waits_for_it and tonumber(hold) > 0 and redis.call('PTTL', k[4]) < tonumber(hold) then
    redis.call('SET', k[4], seq, 'PX', hold)
  end
  touch(k, ttl)
  if changed and waited then redis.call('PUBLISH', channel, name) end
  return 1
end
