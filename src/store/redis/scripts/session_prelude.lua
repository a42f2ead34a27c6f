-- Helpers the session scripts share (placed before each of them).
-- KEYS: session, lease, checkpoint, hold.

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
local function touch(ttl)
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[3], ttl)
end

