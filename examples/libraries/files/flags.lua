#!lua name=flags
-- flags: one function per function flag that matters in practice (no-writes, allow-oom), plus a keyless
-- read-only calculator. Keys, arguments, replies and errors: lua/README.md.
-- Only local helpers and redis.register_function run at load time.

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

-- A finite decimal number: optional sign, digits with an optional fraction, optional exponent ('-0.5', '.5',
-- '2.', '1e3'). Rejects hex ('0x10'), 'inf', 'nan', spaces and the empty string, which tonumber alone accepts
-- or mishandles.
local function decimal(value)
  if type(value) ~= 'string' then
    return nil
  end
  local mantissa = value:match('^(.-)[eE][+-]?%d+$') or value
  if not (mantissa:match('^[+-]?%d+%.?%d*$') or mantissa:match('^[+-]?%.%d+$')) then
    return nil
  end
  local number = tonumber(value)
  if number == nil or number ~= number or number == math.huge or number == -math.huge then
    return nil
  end
  return number
end

local function get_value(keys, args)
  if #keys ~= 1 or #args ~= 0 then
    return fail('INVALID_ARGS', 'usage: FCALL_RO get_value 1 <key>')
  end
  local value = redis.pcall('GET', keys[1])
  if type(value) == 'table' then
    return fail('WRONGTYPE_VALUE', 'key does not hold a string value')
  end
  return value
end

local function important_write(keys, args)
  if #keys ~= 1 or #args ~= 1 then
    return fail('INVALID_ARGS', 'usage: FCALL important_write 1 <key> <value>')
  end
  return redis.call('SET', keys[1], args[1])
end

local function calculate(keys, args)
  if #keys ~= 0 or #args ~= 2 then
    return fail('INVALID_ARGS', 'usage: FCALL_RO calculate 0 <a> <b>')
  end
  local a, b = decimal(args[1]), decimal(args[2])
  if a == nil then
    return fail('INVALID_ARGS', 'a must be a finite decimal number, got ' .. show(args[1]))
  end
  if b == nil then
    return fail('INVALID_ARGS', 'b must be a finite decimal number, got ' .. show(args[2]))
  end
  local sum = a + b
  if sum == math.huge or sum == -math.huge then
    return fail('INVALID_ARGS', 'a+b is outside the double range')
  end
  return { double = sum }
end

redis.register_function{
  function_name = 'get_value',
  callback = get_value,
  flags = { 'no-writes' },
  description = 'Read a string key (nil when missing); FCALL_RO, replicas and OOM allowed',
}
redis.register_function{
  function_name = 'important_write',
  callback = important_write,
  flags = { 'allow-oom' },
  description = 'SET a key even when the server is over maxmemory',
}
redis.register_function{
  function_name = 'calculate',
  callback = calculate,
  flags = { 'no-writes' },
  description = 'a+b as a double; keyless, so it runs on any node, primary or replica',
}
