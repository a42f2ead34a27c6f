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
