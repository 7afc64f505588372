-- Argo CD health of an MCPPolicy (mcp-operator.dev). Argo CD sets `obj`.
-- A policy is healthy once applied; the servers it blocks show their own health.
local hs = { status = "Progressing", message = "Waiting for the mcp-operator controller" }
local status = obj.status
if status == nil then
  return hs
end
local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.message = "Waiting for the controller to observe generation " .. generation
  return hs
end
if status.conditions ~= nil then
  for _, c in ipairs(status.conditions) do
    if c.type == "Ready" then
      if c.status == "True" then
        hs.status = "Healthy"
        hs.message = (status.compliantServers or 0) .. " of " .. (status.matchedServers or 0)
          .. " selected servers compliant"
      else
        hs.message = c.reason .. ": " .. (c.message or "")
      end
    end
  end
end
return hs
