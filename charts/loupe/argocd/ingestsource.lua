-- Argo CD health check for loupe.dev/IngestSource, shipped with the Loupe Helm chart (argocd/).
-- Paste it through argocd-cm.yaml (the same text); tests/operator/test_argocd_health.py runs it on statuses
-- written by the real operator.
local hs = {}

local function find(status, type_)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == type_ then
      return c
    end
  end
  return nil
end

local function text(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  if c ~= nil and c.reason ~= nil and c.reason ~= "" then
    return c.reason
  end
  return fallback
end

local status = obj.status
local generation = obj.metadata.generation

-- Degraded first: a failed reconcile of the current spec may not have advanced observedGeneration,
-- but its condition carries the generation it was written for.
local degraded = find(status, "Degraded")
if degraded ~= nil and degraded.status == "True"
    and (degraded.observedGeneration == nil or generation == nil or degraded.observedGeneration == generation) then
  hs.status = "Degraded"
  hs.message = text(degraded, "Degraded")
  return hs
end

if status == nil or status.observedGeneration == nil
    or (generation ~= nil and status.observedGeneration ~= generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local progressing = find(status, "Progressing")

local ready = find(status, "Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = text(ready, "Ready")
  return hs
end
if progressing ~= nil and progressing.status == "True" then
  hs.status = "Progressing"
  hs.message = text(progressing, "Progressing")
  return hs
end
if ready ~= nil and ready.status == "False" then
  -- Nothing committed yet is a wait, unless the operator gave up; any other reason is a failure.
  if ready.reason == "NoVersion" and not (progressing ~= nil and progressing.reason == "GaveUp") then
    hs.status = "Progressing"
    hs.message = text(progressing, text(ready, "Waiting for the first version"))
    return hs
  end
  hs.status = "Degraded"
  if progressing ~= nil and progressing.reason == "GaveUp" then
    hs.message = text(progressing, text(ready, "Not ready"))
  else
    hs.message = text(ready, "Not ready")
  end
  return hs
end
hs.status = "Progressing"
hs.message = "Waiting for the operator to report Ready"
return hs
