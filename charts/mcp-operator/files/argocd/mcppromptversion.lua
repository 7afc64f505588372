-- Argo CD health of an MCPPromptVersion (mcp-operator.dev). Argo CD sets `obj`.
local hs = { status = "Progressing", message = "Waiting for the mcp-operator controller" }
local status = obj.status
if status == nil or status.conditions == nil then
  return hs
end
local ready = nil
for _, c in ipairs(status.conditions) do
  if c.type == "Ready" then
    ready = c
  end
end
if ready == nil then
  return hs
end
hs.message = ready.reason .. ": " .. (ready.message or "")
if ready.status == "True" then
  hs.status = "Healthy"
elseif ready.reason == "Retired" then
  -- Retired on purpose: kept for the record, never served.
  hs.status = "Suspended"
else
  -- Shadowed by a duplicate, content changed under its version, or not servable as written.
  hs.status = "Degraded"
end
return hs
