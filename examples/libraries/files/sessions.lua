#!lua name=sessions
-- sessions: a session is a hash at <prefix><session_id> (e.g. session:{u42}:Zx8...) that expires after `ttl`
-- seconds of inactivity; each user has a set of their session ids (e.g. user_sessions:{u42}). Session ids come
-- from the client. Keys, arguments, replies and errors: lua/README.md.
-- Only local helpers and redis.register_function run at load time.

local DEFAULT_TTL = 3600
local MAX_ID_LENGTH = 128
-- The JSON's fields, in this order; the numeric ones are JSON numbers. Any other hash field follows as a string, in
-- byte order. The order is fixed by hand because cjson follows Lua table order, which differs between Redis and Valkey.
local FIELDS = { 'session_id', 'user_id', 'data', 'created_at', 'last_activity', 'ttl' }
local NUMERIC_FIELDS = { created_at = true, last_activity = true, ttl = true }

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

-- A TTL in seconds: a positive integer in plain decimal digits, at most 10 digits (~317 years).
local function parse_ttl(value, name)
  local number = type(value) == 'string' and value:match('^%d+$') and tonumber(value)
  if not number or number < 1 or number >= 1e10 then
    return nil, fail('INVALID_ARGS', name .. ' must be a positive integer number of seconds below 10^10, got ' ..
      show(value))
  end
  return number
end

-- The hash tag Redis Cluster hashes for `key`: the text between the first '{' and the next '}', if not empty.
local function hash_tag(key)
  local open = key:find('{', 1, true)
  if not open then
    return nil
  end
  local close = key:find('}', open + 1, true)
  if not close or close == open + 1 then
    return nil
  end
  return key:sub(open + 1, close - 1)
end

local function now_seconds()
  return tonumber(redis.call('TIME')[1])
end

-- The session hash, through pcall: a field->value table, false when the key is missing, or nil and an error.
local function read_session(key)
  local flat = redis.pcall('HGETALL', key)
  if flat.err then
    return nil, fail('WRONGTYPE_VALUE', 'session key does not hold a hash')
  end
  if #flat == 0 then
    return false
  end
  local session = {}
  for i = 1, #flat, 2 do
    session[flat[i]] = flat[i + 1]
  end
  return session
end

local function to_json(session)
  local names, known = {}, {}
  for _, field in ipairs(FIELDS) do
    known[field] = true
    if session[field] ~= nil then
      names[#names + 1] = field
    end
  end
  local extra = {}
  for field in pairs(session) do
    if not known[field] then
      extra[#extra + 1] = field
    end
  end
  table.sort(extra)
  for _, field in ipairs(extra) do
    names[#names + 1] = field
  end
  local parts = {}
  for _, field in ipairs(names) do
    local value = session[field]
    if NUMERIC_FIELDS[field] and tonumber(value) then
      value = tonumber(value)
    end
    parts[#parts + 1] = cjson.encode(field) .. ':' .. cjson.encode(value)
  end
  return '{' .. table.concat(parts, ',') .. '}'
end

-- The user's session index must be a set (or missing) before anything is written.
local function check_index(key)
  local kind = redis.call('TYPE', key)
  kind = type(kind) == 'table' and kind.ok or kind
  if kind ~= 'set' and kind ~= 'none' then
    return fail('WRONGTYPE_VALUE', 'session index key does not hold a set')
  end
  return nil
end

local function session_create(keys, args)
  if #keys ~= 2 or #args < 3 or #args > 4 then
    return fail('INVALID_ARGS',
      'usage: FCALL session_create 2 <session_key> <index_key> <session_id> <user_id> <data> [ttl]')
  end
  local session_key, index_key = keys[1], keys[2]
  local session_id, user_id, data = args[1], args[2], args[3]
  if #session_id > MAX_ID_LENGTH or not session_id:match('^[%w_%.%-]+$') then
    return fail('INVALID_ARGS', 'session_id must be 1-128 characters from A-Z a-z 0-9 _ . -, got ' ..
      show(session_id))
  end
  if #session_key <= #session_id or session_key:sub(-#session_id) ~= session_id then
    return fail('INVALID_ARGS', 'session key must be a prefix followed by the session_id, got ' ..
      show(session_key))
  end
  if user_id == '' then
    return fail('INVALID_ARGS', 'user_id must not be empty')
  end
  local ttl = DEFAULT_TTL
  if args[4] ~= nil then
    local err
    ttl, err = parse_ttl(args[4], 'ttl')
    if err then
      return err
    end
  end
  local bad_index = check_index(index_key)
  if bad_index then
    return bad_index
  end
  if redis.call('EXISTS', session_key) == 1 then
    return fail('SESSION_EXISTS', 'session_id=' .. show(session_id) .. ' is already in use')
  end
  local now = string.format('%d', now_seconds())
  redis.call('HSET', session_key, 'session_id', session_id, 'user_id', user_id, 'data', data,
    'created_at', now, 'last_activity', now, 'ttl', string.format('%d', ttl))
  redis.call('EXPIRE', session_key, string.format('%d', ttl))
  redis.call('SADD', index_key, session_id)
  return session_id
end

local function session_get(keys, args)
  if #keys ~= 1 or #args > 1 then
    return fail('INVALID_ARGS', 'usage: FCALL session_get 1 <session_key> [extend_ttl]')
  end
  local extend_ttl
  if args[1] ~= nil then
    local err
    extend_ttl, err = parse_ttl(args[1], 'extend_ttl')
    if err then
      return err
    end
  end
  local session, err = read_session(keys[1])
  if err then
    return err
  end
  if not session then
    return nil
  end
  local ttl = extend_ttl or tonumber(session.ttl)
  if not ttl then
    return fail('WRONGTYPE_VALUE', 'session has no numeric ttl field')
  end
  session.last_activity = string.format('%d', now_seconds())
  redis.call('HSET', keys[1], 'last_activity', session.last_activity)
  redis.call('EXPIRE', keys[1], string.format('%d', ttl))
  return to_json(session)
end

local function session_peek(keys, args)
  if #keys ~= 1 or #args ~= 0 then
    return fail('INVALID_ARGS', 'usage: FCALL_RO session_peek 1 <session_key>')
  end
  local session, err = read_session(keys[1])
  if err then
    return err
  end
  if not session then
    return nil
  end
  return to_json(session)
end

local function session_destroy(keys, args)
  if #keys ~= 2 or #args ~= 0 then
    return fail('INVALID_ARGS', 'usage: FCALL session_destroy 2 <session_key> <index_key>')
  end
  local session_id = redis.pcall('HGET', keys[1], 'session_id')
  if type(session_id) == 'table' then
    return fail('WRONGTYPE_VALUE', 'session key does not hold a hash')
  end
  if session_id == false then
    return 0
  end
  local bad_index = check_index(keys[2])
  if bad_index then
    return bad_index
  end
  redis.call('SREM', keys[2], session_id)
  redis.call('DEL', keys[1])
  return 1
end

-- Deletes <prefix><id> for every id in the index. Those keys are not in KEYS (nobody can know them before reading
-- the index), so the prefix must carry the index key's hash tag: then every key lives in the index key's slot.
local function session_destroy_all(keys, args)
  if #keys ~= 1 or #args ~= 1 then
    return fail('INVALID_ARGS', 'usage: FCALL session_destroy_all 1 <index_key> <session_key_prefix>')
  end
  local index_key, prefix = keys[1], args[1]
  local tag = hash_tag(index_key)
  if not tag then
    return fail('INVALID_ARGS', 'index key must contain a hash tag such as {u42}, got ' .. show(index_key))
  end
  if hash_tag(prefix) ~= tag then
    return fail('INVALID_ARGS', 'session key prefix must contain the index key hash tag {' .. tag .. '}, got ' ..
      show(prefix))
  end
  local ids = redis.pcall('SMEMBERS', index_key)
  if ids.err then
    return fail('WRONGTYPE_VALUE', 'session index key does not hold a set')
  end
  local destroyed = 0
  for _, session_id in ipairs(ids) do
    local key = prefix .. session_id
    -- Only a session hash that names this id is deleted; anything else at that key is left alone.
    if redis.pcall('HGET', key, 'session_id') == session_id then
      destroyed = destroyed + redis.call('DEL', key)
    end
  end
  redis.call('DEL', index_key)
  return destroyed
end

redis.register_function{
  function_name = 'session_create',
  callback = session_create,
  description = 'Create a session under a client-chosen id and add it to the user index; returns the id',
}
redis.register_function{
  function_name = 'session_get',
  callback = session_get,
  description = 'A session as JSON, refreshing last_activity and the TTL; nil when missing',
}
redis.register_function{
  function_name = 'session_peek',
  callback = session_peek,
  flags = { 'no-writes' },
  description = 'A session as JSON without touching it; nil when missing',
}
redis.register_function{
  function_name = 'session_destroy',
  callback = session_destroy,
  description = 'Delete a session and remove it from the user index; returns 1 if it existed',
}
redis.register_function{
  function_name = 'session_destroy_all',
  callback = session_destroy_all,
  description = 'Delete every session of a user index (session keys = prefix .. id); returns how many',
}
