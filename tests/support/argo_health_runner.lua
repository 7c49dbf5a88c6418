-- Runs an Argo CD health script (health.lua) on one object in C Lua 5.1, in the environment Argo CD gives it:
--
--   lua5.1 tests/support/argo_health_runner.lua argocd/health.lua [OBJECT.json]     (stdin when absent or "-")
--
-- prints {"status": "...", "message": "..."} as one JSON line (empty fields left out). Exit 0 on a result, 1 when
-- the script fails (error, a result that is neither a table nor nil), 2 on usage/input errors.
--
-- Argo CD itself runs health scripts in gopher-lua: tests/argo/ (the argo-health tool) is the authority, and
-- tests/unit/test_argocd_health.py runs every case through both, so health.lua stays correct in either VM. What is
-- reproduced here (argo-cd util/lua/lua.go, for a script from argocd-cm without
-- resource.customizations.useOpenLibs): the object is the global `obj` (JSON numbers are Lua numbers, null is nil);
-- only the base library, `table` and `package` are visible, and require("os") gives just os.time and os.date — no
-- global `os`, no `string`, `math`, `io` or `debug`, and no string methods ("x"):upper(); the chunk's return value
-- is read as Argo CD reads it: nil, an empty table or a status/message of another type than string give an empty
-- health ({}), a status other than Healthy, Progressing, Degraded, Suspended, Missing, Unknown gives Unknown
-- "Lua returned an invalid health status". Not reproduced: gopher-lua's own behaviour (how it prints numbers, that
-- it drops null elements of arrays), Argo CD's 1 s deadline and its "Pending deletion" rule for an object with
-- metadata.deletionTimestamp, which comes before any script; argo-health has all of these.

local byte, char, sub, find, format = string.byte, string.char, string.sub, string.find, string.format
local concat = table.concat

local function fail(code, text)
  io.stderr:write("argo_health_runner: ", text, "\n")
  os.exit(code)
end

-- ---- a small JSON decoder (objects, arrays, strings with \u escapes, numbers, true/false/null) ------------------
local decode_value

local function skip_ws(text, pos)
  local _, last = find(text, "^[ \t\r\n]*", pos)
  return last + 1
end

local function utf8_char(code)
  if code < 0x80 then
    return char(code)
  elseif code < 0x800 then
    return char(0xC0 + math.floor(code / 0x40), 0x80 + code % 0x40)
  elseif code < 0x10000 then
    return char(0xE0 + math.floor(code / 0x1000), 0x80 + math.floor(code / 0x40) % 0x40, 0x80 + code % 0x40)
  end
  return char(0xF0 + math.floor(code / 0x40000), 0x80 + math.floor(code / 0x1000) % 0x40,
    0x80 + math.floor(code / 0x40) % 0x40, 0x80 + code % 0x40)
end

local escapes = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }

local function decode_string(text, pos)  -- pos is at the opening quote
  local parts, i = {}, pos + 1
  while true do
    local start, stop = find(text, '["\\]', i)
    if not start then fail(2, "unterminated string at byte " .. pos) end
    parts[#parts + 1] = sub(text, i, start - 1)
    if sub(text, start, stop) == '"' then
      return concat(parts), start + 1
    end
    local e = sub(text, start + 1, start + 1)
    if e == "u" then
      local code = tonumber(sub(text, start + 2, start + 5), 16)
      if not code then fail(2, "bad \\u escape at byte " .. start) end
      i = start + 6
      if code >= 0xD800 and code <= 0xDBFF and sub(text, i, i + 1) == "\\u" then
        local low = tonumber(sub(text, i + 2, i + 5), 16)
        if low and low >= 0xDC00 and low <= 0xDFFF then
          code = 0x10000 + (code - 0xD800) * 0x400 + (low - 0xDC00)
          i = i + 6
        end
      end
      parts[#parts + 1] = utf8_char(code)
    elseif escapes[e] then
      parts[#parts + 1] = escapes[e]
      i = start + 2
    else
      fail(2, "bad escape at byte " .. start)
    end
  end
end

function decode_value(text, pos)
  pos = skip_ws(text, pos)
  local c = sub(text, pos, pos)
  if c == "{" then
    local result = {}
    pos = skip_ws(text, pos + 1)
    if sub(text, pos, pos) == "}" then return result, pos + 1 end
    while true do
      if sub(text, pos, pos) ~= '"' then fail(2, "expected a key at byte " .. pos) end
      local key
      key, pos = decode_string(text, pos)
      pos = skip_ws(text, pos)
      if sub(text, pos, pos) ~= ":" then fail(2, "expected ':' at byte " .. pos) end
      result[key], pos = decode_value(text, pos + 1)
      pos = skip_ws(text, pos)
      c = sub(text, pos, pos)
      if c == "}" then return result, pos + 1 end
      if c ~= "," then fail(2, "expected ',' or '}' at byte " .. pos) end
      pos = skip_ws(text, pos + 1)
    end
  elseif c == "[" then
    local result, n = {}, 0
    pos = skip_ws(text, pos + 1)
    if sub(text, pos, pos) == "]" then return result, pos + 1 end
    while true do
      local item
      item, pos = decode_value(text, pos)
      n = n + 1
      result[n] = item
      pos = skip_ws(text, pos)
      c = sub(text, pos, pos)
      if c == "]" then return result, pos + 1 end
      if c ~= "," then fail(2, "expected ',' or ']' at byte " .. pos) end
      pos = pos + 1
    end
  elseif c == '"' then
    return decode_string(text, pos)
  elseif sub(text, pos, pos + 3) == "true" then
    return true, pos + 4
  elseif sub(text, pos, pos + 4) == "false" then
    return false, pos + 5
  elseif sub(text, pos, pos + 3) == "null" then
    return nil, pos + 4
  end
  local start, stop = find(text, "^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
  if not start then fail(2, "unexpected input at byte " .. pos) end
  return tonumber(sub(text, start, stop)), stop + 1
end

local function encode_string(s)
  return '"' .. s:gsub('[%c"\\]', function(ch)
    local named = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }
    return named[ch] or format("\\u%04x", byte(ch))
  end) .. '"'
end

-- ---- arguments ---------------------------------------------------------------------------------------------------
local script_path, object_path = arg[1], arg[2]
if not script_path or arg[3] then
  fail(2, "usage: lua5.1 argo_health_runner.lua HEALTH.lua [OBJECT.json]")
end
local input
if object_path == nil or object_path == "-" then
  input = io.read("*a")
else
  local f = io.open(object_path, "rb") or fail(2, "cannot read " .. object_path)
  input = f:read("*a")
  f:close()
end
local object, rest = decode_value(input, 1)
if type(object) ~= "table" or skip_ws(input, rest) <= #input then fail(2, "the input is not one JSON object") end

local chunk, load_error = loadfile(script_path)
if not chunk then fail(1, load_error) end

-- ---- Argo CD's restricted environment ----------------------------------------------------------------------------
local env = {
  obj = object,
  _VERSION = _VERSION,
  assert = assert, error = error, getmetatable = getmetatable, ipairs = ipairs, next = next, pairs = pairs,
  pcall = pcall, print = print, rawequal = rawequal, rawget = rawget, rawset = rawset, select = select,
  setmetatable = setmetatable, tonumber = tonumber, tostring = tostring, type = type, unpack = unpack,
  xpcall = xpcall,
  -- Argo CD preloads a safe "os" module; the global os it means to set up ends up missing (see tests/argo/main.go).
  require = function(name)
    if name == "os" then
      return { time = os.time, date = os.date }
    end
    return require(name)
  end,
  table = { concat = table.concat, insert = table.insert, maxn = table.maxn, remove = table.remove,
            sort = table.sort },
  package = {},
}
env._G = env
setfenv(chunk, env)

-- Without Argo's string library, strings have no methods either: hide them while the script runs.
local string_meta = getmetatable("")
local string_index = string_meta.__index
string_meta.__index = nil
local ok, result = pcall(chunk)
string_meta.__index = string_index

if not ok then fail(1, "the health script failed: " .. tostring(result)) end
if result ~= nil and type(result) ~= "table" then
  fail(1, "expect table output from Lua script, not " .. type(result))
end
-- Argo CD encodes the table to JSON and decodes {status, message} from it: an empty table (encoded as []), an array
-- or a field of another type fails that decoding, and Argo CD then records an empty health.
local status, message
if result ~= nil and next(result) ~= nil and rawget(result, 1) == nil then
  status, message = result.status, result.message
  if (status ~= nil and type(status) ~= "string") or (message ~= nil and type(message) ~= "string") then
    status, message = nil, nil
  else
    local valid = { Healthy = true, Progressing = true, Degraded = true, Suspended = true, Missing = true,
                    Unknown = true }
    if not valid[status] then
      status, message = "Unknown", "Lua returned an invalid health status"
    end
  end
end
local fields = {}
if status ~= nil and status ~= "" then
  fields[#fields + 1] = '"status":' .. encode_string(status)
end
if message ~= nil and message ~= "" then
  fields[#fields + 1] = '"message":' .. encode_string(message)
end
print("{" .. concat(fields, ",") .. "}")
