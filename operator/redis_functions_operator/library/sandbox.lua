-- The load-time environment of FUNCTION LOAD, rebuilt in a fresh Lua 5.1 state so that a library's top level can be
-- run here instead of on a server (see vet.py for why, and docs/lua-sandbox.md for what was measured).
--
-- This chunk is trusted: it runs first, keeps what it needs in locals, and returns `compile(body)` and
-- `run(chunk, server, budget, cost_limit)`. The library body then runs with a proxy for its globals that holds only what the server
-- gives a library while it loads (Redis 7.x: `redis`; Valkey: `redis` and `server`, one table), so nothing else in
-- this state (io, os, package, debug, load*, the sandbox's own functions) is reachable from it. The one shared
-- object is the string metatable, whose `__index` is the string library on the server too: `("x"):rep(3)` works
-- while a library loads.
--
-- Emulated, as the servers' C code does it (function_lua.c, script_lua.c, functions.c):
--   * register_function: argument reading and its errors, flags read from t[1], t[2], ... until nil, names checked
--     at the call (Redis) or after the whole top level ran (Valkey 9.1);
--   * log: argument checks, then a log line (Redis); on Valkey 9.1 any call aborts the server (`rctx` assertion);
--   * the error metatable ("Script attempted to access nonexistent global variable") and read-only tables.
-- Bounded: a count hook stops the run after `budget` VM instructions, a call hook prices the C string functions
-- whose time is not bounded by memory (pattern matching backtracks, rep loops) before they run, and the runtime's
-- memory limit (set by vet.py) stops allocation.

local debug_sethook, debug_getinfo, debug_getlocal = debug.sethook, debug.getinfo, debug.getlocal
local loadstring, setfenv, setmetatable, pcall, select, type, next, tostring, tonumber, error, rawequal =
    loadstring, setfenv, setmetatable, pcall, select, type, next, tostring, tonumber, error, rawequal
local s_find, s_gsub, s_sub, s_byte, s_rep, s_gmatch = string.find, string.gsub, string.sub, string.byte,
    string.rep, string.gmatch
local concat = table.concat
local floor = math.floor

-- Sentinels: error objects no library can raise (it has no `error`), so the run's end is told apart exactly.
local BUDGET, COST, CRASH = {}, {}, {}

-- Locale-free ASCII lower case (strcasecmp in the C locale), and a C string: the bytes before the first NUL.
local function ascii_lower(s)
  return (s_gsub(s, "[A-Z]", function(c) return string.char(s_byte(c) + 32) end))
end
local function c_string(s)
  local nul = s_find(s, "\0", 1, true)
  return nul and s_sub(s, 1, nul - 1) or s
end
-- lua_isstring: a string or a number; lua_tolstring turns a number into its "%.14g" text, as tostring does.
local function is_string(v)
  local t = type(v)
  return t == "string" or t == "number"
end

local FLAGS = { ["no-writes"] = true, ["allow-oom"] = true, ["allow-stale"] = true, ["no-cluster"] = true,
                ["allow-cross-slot-keys"] = true }

-- compile(body): the library body compiled as the server compiles it, or nil and the compiler's message.
local function compile(body)
  local chunk, message = loadstring(body, "@user_function")
  return chunk or false, message or ""
end

-- run(chunk, server, budget, cost_limit): one FUNCTION LOAD of the compiled body on the server that `server`
-- describes (vet.py's ServerProfile): the name its messages give the API (api), whether it has the `server` global
-- and the Valkey fields (valkey), whether it checks names only after the top level ran (deferred_names), whether a
-- log call aborts it (log_aborts), how it names a bad log level (level_word), and its version fields. The chunk is
-- reused across runs: each run gives it a fresh environment, and a chunk's top level keeps no state of its own
-- between calls.
local function run(chunk, server, budget, cost_limit)
  local api_name = server.api
  local registrations, logs, registered = {}, {}, {}
  local version_read = false
  local crash = nil
  local busy = false  -- true while the sandbox's own register/log run: their string calls are not priced

  -- The line of the library's top level that is running: the outermost frame of library code, so that a
  -- registration made by a helper is reported where the top level calls the helper (what a reader looks for).
  local function user_line()
    local line = 0
    for level = 3, 1000 do
      local info = debug_getinfo(level, "Sl")
      if not info then break end
      if info.source == "@user_function" and info.currentline > 0 then line = info.currentline end
    end
    return line
  end

  -- luaPushError + lua_error: a table error; the load reply is "Error registering functions: " .. err
  local function raise(message)
    error({ err = "ERR " .. message, line = user_line() }, 0)
  end

  -- The library API table, filled in the order the C code fills it, so that `next` visits it in the same order.
  local api = {}
  local proxies = {}
  -- level 3: the library line that indexed (1 is this function, 2 the __index metamethod)
  local function nonexistent(key, level)
    error("Script attempted to access nonexistent global variable '" .. tostring(key) .. "'", level)
  end
  local function readonly()
    error("Attempt to modify a readonly table", 3)
  end
  -- A read-only table whose missing keys raise, standing for one of the server's protected tables.
  local function protected(backing, watch)
    local proxy = setmetatable({}, {
      __index = function(_, key)
        local value = backing[key]
        if value == nil then nonexistent(key, 3) end
        if watch and watch[key] then version_read = true end
        return value
      end,
      __newindex = function() readonly() end,
      __metatable = false,
    })
    proxies[proxy] = backing
    return proxy
  end
  -- lua_gettable from C code: a protected table raises without a position (the caller is a C function).
  local function c_get(t, key)
    local backing = proxies[t]
    if backing == nil then return t[key] end
    local value = backing[key]
    if value == nil then nonexistent(key, 0) end
    return value
  end

  local function read_flags(t)
    local flags, j = {}, 1
    while true do
      local v = c_get(t, j)
      if v == nil then break end
      if not is_string(v) then return nil end
      local flag = ascii_lower(c_string(tostring(v)))
      if not FLAGS[flag] then return nil end
      flags[#flags + 1] = flag
      j = j + 1
    end
    -- keys other than 1..n are silently ignored by the server: remember them for lint
    local ignored = {}
    for k in next, (proxies[t] or t) do
      if not (type(k) == "number" and k >= 1 and k < j and floor(k) == k) then ignored[#ignored + 1] = tostring(k) end
    end
    return flags, ignored
  end

  local function register(...)
    busy = true
    local argc = select("#", ...)
    local where = api_name .. ".register_function"
    if argc < 1 or argc > 2 then raise("wrong number of arguments to " .. where) end
    local name, description, callback, flags, ignored = nil, nil, nil, {}, {}
    if argc == 1 then
      local t = ...
      if type(t) ~= "table" then
        raise("calling " .. where .. " with a single argument is only applicable to Lua table (representing named " ..
              "arguments).")
      end
      for key, value in next, (proxies[t] or t) do
        if not is_string(key) then raise("named argument key given to " .. where .. " is not a string") end
        local field = ascii_lower(c_string(tostring(key)))
        if field == "function_name" then
          if not is_string(value) then raise("function_name argument given to " .. where .. " must be a string") end
          name = tostring(value)
        elseif field == "description" then
          if not is_string(value) then raise("description argument given to " .. where .. " must be a string") end
          description = tostring(value)
        elseif field == "callback" then
          if type(value) ~= "function" then raise("callback argument given to " .. where .. " must be a function") end
          callback = value
        elseif field == "flags" then
          if type(value) ~= "table" then
            raise("flags argument to " .. where .. " must be a table representing function flags")
          end
          flags, ignored = read_flags(value)
          if flags == nil then raise("unknown flag given") end
        else
          raise("unknown argument given to " .. where)
        end
      end
      if name == nil then raise(where .. " must get a function name argument") end
      if callback == nil then raise(where .. " must get a callback argument") end
    else
      local first, second = ...
      if not is_string(first) then raise("first argument to " .. where .. " must be a string") end
      if type(second) ~= "function" then raise("second argument to " .. where .. " must be a function") end
      name = tostring(first)
    end
    local entry = { name = name, flags = flags, ignored = ignored, description = description, line = user_line() }
    if not server.deferred_names then
      -- functionLibCreateFunction runs inside the call: the first bad name or duplicate stops the top level
      if not s_find(name, "^[A-Za-z0-9_]+$") then
        raise("Library names can only contain letters, numbers, or underscores(_) and must be at least one " ..
              "character long")
      end
      if registered[name] then raise("Function already exists in the library") end
      registered[name] = true
    end
    registrations[#registrations + 1] = entry
    busy = false
  end

  local function log(...)
    busy = true
    if server.log_aborts then
      -- Valkey 9.1.2 asserts a script run context before it even counts the arguments
      crash = { what = "log", line = user_line() }
      error(CRASH, 0)
    end
    local argc = select("#", ...)
    if argc < 2 then raise(api_name .. ".log() requires two arguments or more.") end
    local level = ...
    if tonumber(level) == nil then raise("First argument must be a number (log level).") end
    level = tonumber(level)
    local int = level >= 0 and floor(level) or -floor(-level)
    if not (int >= 0 and int <= 3) then raise("Invalid " .. server.level_word .. " level.") end
    logs[#logs + 1] = { level = int, line = user_line() }
    busy = false
  end

  api.register_function = register
  api.log = log
  api.LOG_DEBUG = 0
  api.LOG_VERBOSE = 1
  api.LOG_NOTICE = 2
  api.LOG_WARNING = 3
  api.REDIS_VERSION_NUM = server.redis_num
  api.REDIS_VERSION = server.redis
  local watched = { REDIS_VERSION_NUM = true, REDIS_VERSION = true }
  if server.valkey then
    api.VALKEY_VERSION_NUM = server.valkey_num
    api.VALKEY_VERSION = server.valkey_version
    api.SERVER_NAME = "valkey"
    watched.VALKEY_VERSION_NUM = true
    watched.VALKEY_VERSION = true
    watched.SERVER_NAME = true
  end
  local library_api = protected(api, watched)
  local global_names = { redis = library_api }
  if server.valkey then global_names.server = library_api end
  local globals = protected(global_names)

  -- Price of the C string functions a library can reach (through the string metatable) whose run time is not
  -- bounded by the memory they allocate. Lua 5.1's matcher backtracks: each quantifier, %b or back-reference can
  -- multiply the work by the subject's length. The bound counts every '*', '+', '-', '?' and '%' in the pattern
  -- (escaped or not, so it only over-counts).
  local matchers = { [string.find] = "find", [string.match] = "match", [string.gmatch] = "gmatch",
                     [string.gsub] = "gsub" }
  local function arg(level, i)
    local name, value = debug_getlocal(level, i)
    if name == nil then return nil end
    return value
  end
  local function price(func, level)
    if func == s_rep then
      local s, n = arg(level, 1), arg(level, 2)
      if is_string(s) and tonumber(n) then return tonumber(n) end
      return 0
    end
    local which = matchers[func]
    if which == nil then return 0 end
    local s, p = arg(level, 1), arg(level, 2)
    if not (is_string(s) and is_string(p)) then return 0 end
    s, p = tostring(s), tostring(p)
    local n, m = #s + 2, #p + 1
    if which == "find" and (arg(level, 4) or not s_find(p, "[%^%$%*%+%?%.%(%)%[%]%%%-]")) then
      return n * m
    end
    -- drop escapes (%x is one literal or class) except %b and back-references, which scan the subject
    local k = 0
    local plain = s_gsub(p, "%%(.)", function(c)
      if c == "b" or s_find(c, "^[1-9]$") then k = k + 1 end
      return ""
    end)
    for _ in s_gmatch(plain, "[%*%+%-%?]") do k = k + 1 end
    return m * n ^ (k + 1)
  end

  -- level 2 is the function being called; inside price -> arg -> debug.getlocal it is level 4
  local stop_line = 0
  local function hook(event)
    if event == "count" then
      stop_line = user_line()
      error(BUDGET, 0)
    end
    if busy then return end
    local info = debug_getinfo(2, "f")
    if info and info.func ~= nil and price(info.func, 4) > cost_limit then
      stop_line = user_line()
      error(COST, 0)
    end
  end

  setfenv(chunk, globals)
  debug_sethook(hook, "c", budget)
  local ok, failure = pcall(chunk)
  debug_sethook()

  -- One string out, so that a 10,000-function library crosses into Python in one piece: fields are netstrings
  -- ("<length>:<bytes>"), a registration is name, description ("-" for none, else "+" and the text), line, the
  -- flags and the ignored flag keys (each a count, then the items), and a log is its line.
  local out = {}
  local function put(v)
    v = tostring(v)
    out[#out + 1] = #v .. ":" .. v
  end
  for _, r in next, registrations do
    put(r.name)
    if r.description == nil then put("-") else put("+" .. r.description) end
    put(r.line)
    put(#r.flags)
    for _, f in next, r.flags do put(f) end
    put(#r.ignored)
    for _, k in next, r.ignored do put(k) end
  end
  local packed_registrations = concat(out)
  out = {}
  for _, l in next, logs do put(l.line) end
  local packed_logs = concat(out)
  local status, line, message
  if ok then
    status = "ran"
  elseif rawequal(failure, CRASH) then
    status, line = "crash", crash.line
  elseif rawequal(failure, BUDGET) then
    status, line = "budget", stop_line
  elseif rawequal(failure, COST) then
    status, line = "cost", stop_line
  elseif type(failure) == "table" then
    status, message, line = "error", failure.err, failure.line
  elseif failure == "not enough memory" then
    status = "memory"
  elseif type(failure) == "string" and (s_find(failure, "stack overflow$") or failure == "error in error handling") then
    -- Lua's own recursion limits (call depth, C stack): the hook's frames count against them too
    status, message = "recursion", failure
  else
    status, message = "error", "ERR " .. tostring(failure)
  end
  return status, line or 0, message or "", packed_registrations, packed_logs, version_read
end

return compile, run
