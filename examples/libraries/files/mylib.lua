#!lua name=mylib
-- mylib: counters that never go below zero, and a greeting.
-- Keys, arguments, replies and errors of every function: lua/README.md.
-- Only local helpers and redis.register_function run at load time.

-- 2^53 - 1: the largest integer a Lua number holds exactly. A function's integer reply passes through a Lua number,
-- so counters (and amounts) stay within +-MAX_COUNTER; beyond it the reply would silently be wrong.
local MAX_COUNTER = 9007199254740991

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

-- The counter's value as a number (0 when the key is missing), or nil and an error reply.
local function read_counter(key)
  local value = redis.pcall('GET', key)
  if type(value) == 'table' then
    return nil, fail('WRONGTYPE_VALUE', 'counter key does not hold a string value')
  end
  if value == false then
    return 0
  end
  -- What INCRBY accepts: an optional '-', no leading zeros, no '+', no spaces.
  if value ~= '0' and not value:match('^%-?[1-9]%d*$') then
    return nil, fail('WRONGTYPE_VALUE', 'stored value is not an integer: ' .. show(value))
  end
  local number = tonumber(value)
  -- Rounding is monotonic and MAX_COUNTER is exact, so this comparison is right even for huge values.
  if number > MAX_COUNTER or number < -MAX_COUNTER then
    return nil, fail('OVERFLOW', 'stored value is outside +-9007199254740991: ' .. show(value))
  end
  return number
end

local function parse_call(name, keys, args)
  if #keys ~= 1 or #args > 1 then
    return nil, fail('INVALID_ARGS', 'usage: FCALL ' .. name .. ' 1 <counter> [amount]')
  end
  local value = args[1]
  if value == nil then
    return 1
  end
  local amount = value:match('^%d+$') and tonumber(value)
  if not amount or amount < 1 or amount > MAX_COUNTER then
    return nil, fail('INVALID_AMOUNT', 'amount must be a positive integer up to 9007199254740991, got ' .. show(value))
  end
  return amount
end

local function increment_counter(keys, args)
  local amount, err = parse_call('increment_counter', keys, args)
  if err then
    return err
  end
  local current
  current, err = read_counter(keys[1])
  if err then
    return err
  end
  if current + amount > MAX_COUNTER then
    return fail('OVERFLOW', string.format('counter would exceed 9007199254740991: current=%d requested=%d', current,
      amount))
  end
  return redis.call('INCRBY', keys[1], string.format('%d', amount))
end

local function decrement_counter(keys, args)
  local amount, err = parse_call('decrement_counter', keys, args)
  if err then
    return err
  end
  local current
  current, err = read_counter(keys[1])
  if err then
    return err
  end
  if current < amount then
    return fail('INSUFFICIENT_BALANCE', string.format('current=%d requested=%d', current, amount))
  end
  return redis.call('DECRBY', keys[1], string.format('%d', amount))
end

local function hello(keys, args)
  if #keys ~= 0 or #args > 1 then
    return fail('INVALID_ARGS', 'usage: FCALL_RO hello 0 [name]')
  end
  local name = args[1]
  if name == nil then
    return 'Hello, World!'
  end
  if name == '' then
    return fail('INVALID_ARGS', 'name must not be empty')
  end
  return 'Hello, ' .. name .. '!'
end

redis.register_function{
  function_name = 'increment_counter',
  callback = increment_counter,
  description = 'Add a positive integer (default 1) to a counter; returns the new value',
}
redis.register_function{
  function_name = 'decrement_counter',
  callback = decrement_counter,
  description = 'Subtract a positive integer (default 1) from a counter, never below 0; returns the new value',
}
redis.register_function{
  function_name = 'hello',
  callback = hello,
  flags = { 'no-writes' },
  description = 'Greet a name (default World)',
}
