-- Argo CD health check for redisfunctions.dev/RedisFunctionLibrary (the redis-functions-operator).
--
-- The status follows the kstatus conventions (status.observedGeneration; Ready, Reconciling and Stalled conditions
-- with "abnormal-true" polarity), plus a ReconciliationPaused condition. Mapping, first match wins:
--   annotation redisfunctions.dev/managed=false or pause-reconciliation=true (read from metadata at once, before
--     the operator writes its ReconciliationPaused condition, as Argo CD's Flux checks read spec.suspend)  -> Suspended
--   metadata.generation not yet observed (status.observedGeneration, -1 until the operator acts)            -> Progressing
--   ReconciliationPaused=True the annotations no longer ask for (the operator has not resumed yet)            -> Progressing
--   ReconciliationPaused=True for an annotation value only the operator can read (see annotationSays)         -> Suspended
--   Stalled=True (compile error, function-name conflict, bad credentials, missing Secret..., and drift left
--     as found by driftPolicy Report or managementPolicy Observe: reason Drifted, naming the nodes)           -> Degraded
--   Reconciling=True (loading, or a transient error the operator retries)                                     -> Progressing
--   Ready=True (every primary holds the exact code)                                                            -> Healthy
--   anything else                                                                                              -> Progressing
-- A deleted object (deletionTimestamp) never reaches this script: Argo CD reports it Progressing "Pending deletion".
--
-- Argo CD runs this in gopher-lua with only the base, table and package libraries (no string or math library, no
-- string methods, no global os) unless resource.customizations.useOpenLibs is set, so it uses the language alone.
-- It must give the same answer in C Lua 5.1 too (tests/unit/test_argocd_health.py runs both), which is why it
-- compares and prints numbers itself and walks conditions with pairs: see sameNumber, numberText and byType.
local hs = { status = "Progressing", message = "Waiting for the operator to observe the object" }

local PAUSE_ANNOTATION = "redisfunctions.dev/pause-reconciliation"
local MANAGED_ANNOTATION = "redisfunctions.dev/managed"

-- Every spelling of an ASCII word in any letter case ("true", "True", "TRUE", "tRuE"...), built from its letters:
-- the operator lower-cases annotation values, and without the string library this is how to do the same.
local function spellings(letters)
  local words = { [""] = true }
  for _, pair in ipairs(letters) do
    local longer = {}
    for word in pairs(words) do
      longer[word .. pair[1]] = true
      longer[word .. pair[2]] = true
    end
    words = longer
  end
  return words
end
local TRUE = spellings({ { "t", "T" }, { "r", "R" }, { "u", "U" }, { "e", "E" } })
local FALSE = spellings({ { "f", "F" }, { "a", "A" }, { "l", "L" }, { "s", "S" }, { "e", "E" } })

-- What an annotation value means to the operator (value.strip().lower() == word): true or false when certain, nil
-- when only the operator can tell. Any letter case is certain; surrounding whitespace, which the operator trims,
-- cannot be trimmed here, so such a value waits for the operator's own condition.
local function annotationSays(value, word, otherWord)
  if value == nil or value == "" or otherWord[value] then
    return false
  end
  if word[value] then
    return true
  end
  return nil
end

-- Generations are numbers (or digit strings, from a client that decoded them so). Compared as numbers: comparing
-- tostring() results is wrong in C Lua 5.1, whose "%.14g" prints 123456789012345 and 123456789012344 alike.
local function sameNumber(a, b)
  local x, y = tonumber(a), tonumber(b)
  if x ~= nil and y ~= nil then
    return x == y
  end
  return tostring(a) == tostring(b)
end

-- A whole number as its digits, the same in both VMs: tostring(1e15) is "1e+15" in C Lua 5.1 but
-- "1000000000000000" in gopher-lua. Anything else (fractions, huge values, strings) as tostring gives it.
local DIGITS = { [0] = "0", "1", "2", "3", "4", "5", "6", "7", "8", "9" }
local function numberText(value)
  if type(value) ~= "number" or value % 1 ~= 0 or value >= 2 ^ 53 or value <= -(2 ^ 53) then
    return tostring(value)
  end
  local n, digits = value, ""
  if n < 0 then
    n = -n
  end
  repeat
    local digit = n % 10
    digits = DIGITS[digit] .. digits
    n = (n - digit) / 10
  until n == 0
  if value < 0 then
    digits = "-" .. digits
  end
  return digits
end

local metadata = obj.metadata or {}
local annotations = metadata.annotations or {}
local unmanaged = annotationSays(annotations[MANAGED_ANNOTATION], FALSE, TRUE)
local paused = annotationSays(annotations[PAUSE_ANNOTATION], TRUE, FALSE)
local status = obj.status or {}

-- pairs, not ipairs: gopher-lua drops a null element of a JSON array while C Lua leaves a hole where ipairs stops.
local byType = {}
if type(status.conditions) == "table" then
  for _, condition in pairs(status.conditions) do
    if type(condition) == "table" and condition.type ~= nil then
      byType[condition.type] = condition
    end
  end
end

local function isTrue(conditionType)
  local condition = byType[conditionType]
  return condition ~= nil and condition.status == "True"
end

local function describe(conditionType)
  local condition = byType[conditionType]
  local text = condition.message
  if text == nil or text == "" then
    text = condition.reason or conditionType
  elseif condition.reason ~= nil and condition.reason ~= "" then
    text = condition.reason .. ": " .. text
  end
  return text
end

-- Whether the operator's ReconciliationPaused reason still matches the annotations (it lags them until it writes).
-- Unmanaged wins over Paused in the operator, as here.
local function annotationsAllow(reason)
  if reason == "Unmanaged" then
    return unmanaged ~= false
  end
  return unmanaged ~= true and paused ~= false
end

local suspendedBy = nil
if unmanaged == true then
  suspendedBy = "Unmanaged"
elseif paused == true then
  suspendedBy = "Paused"
end
if suspendedBy ~= nil then
  hs.status = "Suspended"
  if isTrue("ReconciliationPaused") and annotationsAllow(byType["ReconciliationPaused"].reason) then
    hs.message = describe("ReconciliationPaused")
  elseif suspendedBy == "Unmanaged" then
    hs.message = "Unmanaged: annotation " .. MANAGED_ANNOTATION .. "=false; not yet acknowledged by the operator"
  else
    hs.message = "Paused: annotation " .. PAUSE_ANNOTATION .. "=true; not yet acknowledged by the operator"
  end
  return hs
end

local observed = status.observedGeneration
if observed == nil then
  return hs
end
local generation = metadata.generation
if generation ~= nil and not sameNumber(generation, observed) then
  if not sameNumber(observed, -1) then
    hs.message = "Waiting for the operator to observe generation " .. numberText(generation) ..
      " (last observed: " .. numberText(observed) .. ")"
  end
  return hs
end

if isTrue("ReconciliationPaused") then
  if annotationsAllow(byType["ReconciliationPaused"].reason) then
    hs.status = "Suspended"
    hs.message = describe("ReconciliationPaused")
  else
    hs.message = "Resuming: no annotation pauses or detaches the library any more; waiting for the operator (last: " ..
      describe("ReconciliationPaused") .. ")"
  end
elseif isTrue("Stalled") then
  hs.status = "Degraded"
  hs.message = describe("Stalled")
elseif isTrue("Reconciling") then
  hs.message = describe("Reconciling")
elseif isTrue("Ready") then
  hs.status = "Healthy"
  hs.message = describe("Ready")
elseif byType["Ready"] ~= nil then
  hs.message = describe("Ready")
else
  hs.message = "Waiting for the Ready condition"
end
return hs
