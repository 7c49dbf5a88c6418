-- Argo CD health check for redisfunctions.dev/RedisFunctionLibrary (the redis-functions-operator).
--
-- The status follows the kstatus conventions (status.observedGeneration; Ready, Reconciling and Stalled conditions
-- with "abnormal-true" polarity), plus a ReconciliationPaused condition. Mapping:
--   metadata.generation not yet observed (status.observedGeneration, -1 until the operator acts) -> Progressing
--   ReconciliationPaused=True (annotation pause-reconciliation or managed=false)                  -> Suspended
--   Stalled=True (compile error, function-name conflict, bad credentials, missing Secret...)     -> Degraded
--   Reconciling=True (loading, or a transient error the operator retries)                        -> Progressing
--   Ready=True (every primary holds the exact code)                                               -> Healthy
--   anything else                                                                                 -> Progressing
-- A deleted object (deletionTimestamp) never reaches this script: Argo CD reports it Progressing "Pending deletion".
--
-- Plain Lua only (no string/math library), so it runs without resource.customizations.useOpenLibs.
local hs = { status = "Progressing", message = "Waiting for the operator to observe the object" }

local status = obj.status
if status == nil or status.observedGeneration == nil then
  return hs
end
-- tostring on both sides: numbers may reach the script as numbers or as strings, depending on how they were decoded.
local generation = obj.metadata.generation
local observed = status.observedGeneration
if generation ~= nil and tostring(generation) ~= tostring(observed) then
  if tostring(observed) ~= "-1" then
    hs.message = "Waiting for the operator to observe generation " .. tostring(generation) ..
      " (last observed: " .. tostring(observed) .. ")"
  end
  return hs
end

local byType = {}
if status.conditions ~= nil then
  for _, condition in ipairs(status.conditions) do
    if condition.type ~= nil then
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

if isTrue("ReconciliationPaused") then
  hs.status = "Suspended"
  hs.message = describe("ReconciliationPaused")
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
