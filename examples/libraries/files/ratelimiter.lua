#!lua name=ratelimiter
-- ratelimiter: a token bucket per key. A bucket holds at most max_tokens and refills continuously at
-- refill_per_second, measured with the server clock (TIME). Keys, arguments, replies and errors: lua/README.md.
-- Only local helpers and redis.register_function run at load time.

local MAX_EXPIRE_SECONDS = 1e12 -- beyond this (~31,700 years) a bucket is simply kept without a TTL

local function fail(code, details)
  return redis.error_reply(code .. ' ' .. details)
end

-- A caller's value echoed in an error: short, on one line.
local function show(value)
  value = tostring(value)
  if #value > 64 then
    value = value:sub(1, 61) .. '...'
  end
  return "'" .. value:gsub('%c', '?') .. "'"
end

-- A positive integer in plain decimal digits (no sign, fraction, exponent or hex), below 10^15 so it is exact.
local function positive_integer(value)
  if type(value) ~= 'string' or not value:match('^%d+$') then
    return nil
  end
  local number = tonumber(value)
  if number < 1 or number >= 1e15 then
    return nil
  end
  return number
end

-- A positive plain decimal ('5', '0.5', '.25', '2.'): no sign, exponent or hex; finite and > 0.
local function positive_decimal(value)
  if type(value) ~= 'string' or not (value:match('^%d+%.?%d*$') or value:match('^%.%d+$')) then
    return nil
  end
  local number = tonumber(value)
  if number == nil or number <= 0 or number == math.huge then
    return nil
  end
  return number
end

-- Six decimals: what is stored and shown, identical on Redis and Valkey.
local function fixed(number)
  return string.format('%.6f', number)
end

local function server_time()
  local now = redis.call('TIME')
  return tonumber(now[1]) + tonumber(now[2]) / 1000000
end

-- Tokens in the bucket at `now`: the stored count plus the refill since last_update, never above max_tokens.
-- A clock that went backwards (e.g. after a failover) refills nothing.
local function refilled(tokens, last_update, now, max_tokens, refill_per_second)
  local elapsed = now - last_update
  if elapsed < 0 then
    elapsed = 0
  end
  return math.min(max_tokens, tokens + elapsed * refill_per_second)
end

local function check_rate_limit(keys, args)
  if #keys ~= 1 or #args < 2 or #args > 3 then
    return fail('INVALID_ARGS', 'usage: FCALL check_rate_limit 1 <bucket> <max_tokens> <refill_per_second> [requested]')
  end
  local max_tokens = positive_integer(args[1])
  if not max_tokens then
    return fail('INVALID_ARGS', 'max_tokens must be a positive integer below 10^15, got ' .. show(args[1]))
  end
  local refill_per_second = positive_decimal(args[2])
  if not refill_per_second then
    return fail('INVALID_ARGS', 'refill_per_second must be a positive decimal number, got ' .. show(args[2]))
  end
  local requested = 1
  if args[3] ~= nil then
    requested = positive_integer(args[3])
    if not requested then
      return fail('INVALID_ARGS', 'requested must be a positive integer below 10^15, got ' .. show(args[3]))
    end
  end
  if requested > max_tokens then
    return fail('INVALID_ARGS', string.format('requested=%d can never be granted with max_tokens=%d', requested,
      max_tokens))
  end

  local bucket = redis.pcall('HMGET', keys[1], 'tokens', 'last_update')
  if bucket.err then
    return fail('WRONGTYPE_VALUE', 'bucket key does not hold a hash')
  end
  local now = server_time()
  local tokens, last_update = max_tokens, now -- a new bucket starts full
  if bucket[1] or bucket[2] then
    tokens, last_update = tonumber(bucket[1]), tonumber(bucket[2])
    if tokens == nil or last_update == nil then
      return fail('WRONGTYPE_VALUE', 'bucket fields tokens/last_update are not numbers')
    end
  end
  tokens = refilled(tokens, last_update, now, max_tokens, refill_per_second)

  local allowed = 0
  if tokens >= requested then
    tokens = tokens - requested
    allowed = 1
  end
  redis.call('HSET', keys[1], 'tokens', fixed(tokens), 'last_update', fixed(now),
    'max_tokens', string.format('%d', max_tokens), 'refill_per_second', args[2])
  -- Once full again the bucket is indistinguishable from a new one, so it may expire then.
  local ttl = math.ceil((max_tokens - tokens) / refill_per_second) + 1
  if ttl <= MAX_EXPIRE_SECONDS then
    redis.call('EXPIRE', keys[1], string.format('%d', ttl))
  else
    redis.call('PERSIST', keys[1])
  end
  return { allowed, math.floor(tokens) }
end

local function get_rate_limit_status(keys, args)
  if #keys ~= 1 or #args ~= 0 then
    return fail('INVALID_ARGS', 'usage: FCALL_RO get_rate_limit_status 1 <bucket>')
  end
  local bucket = redis.pcall('HMGET', keys[1], 'tokens', 'last_update', 'max_tokens', 'refill_per_second')
  if bucket.err then
    return fail('WRONGTYPE_VALUE', 'bucket key does not hold a hash')
  end
  if not (bucket[1] or bucket[2]) then
    return nil
  end
  local tokens, last_update = tonumber(bucket[1]), tonumber(bucket[2])
  local max_tokens, refill_per_second = tonumber(bucket[3]), tonumber(bucket[4])
  if tokens == nil or last_update == nil or max_tokens == nil or refill_per_second == nil then
    return fail('WRONGTYPE_VALUE', 'bucket fields are not numbers')
  end
  return {
    map = {
      tokens = bucket[1],
      last_update = bucket[2],
      max_tokens = max_tokens,
      refill_per_second = bucket[4],
      tokens_now = fixed(refilled(tokens, last_update, server_time(), max_tokens, refill_per_second)),
    },
  }
end

redis.register_function{
  function_name = 'check_rate_limit',
  callback = check_rate_limit,
  description = 'Take tokens from a token bucket; returns {allowed 0/1, remaining}',
}
redis.register_function{
  function_name = 'get_rate_limit_status',
  callback = get_rate_limit_status,
  flags = { 'no-writes' },
  description = 'A bucket as a map (tokens, last_update, max_tokens, refill_per_second, tokens_now), or nil',
}
