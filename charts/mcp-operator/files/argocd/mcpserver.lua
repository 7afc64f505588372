-- Argo CD health of an MCPServer (mcp-operator.dev), from the conditions the controller writes.
-- Argo CD sets `obj`; this script returns { status = ..., message = ... }.
local hs = { status = "Progressing", message = "Waiting for the mcp-operator controller" }

local function condition(status, type)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local function describe(c)
  if c == nil then
    return ""
  end
  if c.message ~= nil and c.message ~= "" then
    return c.reason .. ": " .. c.message
  end
  return c.reason or ""
end

local status = obj.status
if status == nil then
  return hs
end
local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.message = "Waiting for the controller to observe generation " .. generation
  return hs
end

local ready = condition(status, "Ready")
local phase = status.phase or ""

-- The spec cannot be rolled out as written, an enforced MCPPolicy blocks it, or it broke.
if phase == "Invalid" then
  hs.status = "Degraded"
  hs.message = describe(ready)
  return hs
end
if phase == "Blocked" then
  hs.status = "Degraded"
  hs.message = describe(condition(status, "PolicyCompliant"))
  return hs
end
if phase == "Degraded" then
  hs.status = "Degraded"
  hs.message = describe(condition(status, "Degraded") or ready)
  return hs
end

local spec = obj.spec or {}
if spec.autoscaling == nil and spec.replicas == 0 then
  hs.status = "Suspended"
  hs.message = "Scaled to zero replicas"
  return hs
end

if ready == nil or ready.status ~= "True" then
  hs.status = "Progressing"
  hs.message = describe(ready)
  return hs
end

-- Rolled out: what the gateway found in its live tools, and unresolved managed prompts,
-- still need someone's attention.
local tools = condition(status, "ToolsVerified")
if tools ~= nil and tools.status == "False" and tools.reason == "ToolsQuarantined" then
  hs.status = "Degraded"
  hs.message = describe(tools)
  return hs
end
local prompts = condition(status, "PromptsResolved")
if prompts ~= nil and prompts.status == "False" then
  hs.status = "Degraded"
  hs.message = describe(prompts)
  return hs
end

hs.status = "Healthy"
hs.message = describe(ready)
if tools ~= nil and tools.status == "False" then
  hs.message = hs.message .. "; " .. describe(tools)
end
return hs
