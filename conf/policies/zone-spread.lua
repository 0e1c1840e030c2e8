-- zone-spread: spread a service's tasks evenly over the values of the node label "zone".
--
-- Prefer nodes in the zone that has the fewest tasks of the service, and inside a zone the
-- node with the fewest. Nodes without the label count as one more zone of their own, as with
-- `--placement-pref spread=node.labels.zone`.
--
--   shoal node update --label-add zone=east node-1
--   shoal policy create zone-spread zone-spread.lua
--   shoal service create --placement-policy zone-spread ...

local function zoneOf(node)
  return node.labels.zone or ""
end

return shoal.policy{
  name = "zone-spread",
  description = "Spread the service's tasks evenly over node.labels.zone values",

  -- Once per batch: the service's tasks per zone, summed over every node of the snapshot.
  prepare = function(task, nodes)
    local perZone = {}
    for _, node in ipairs(nodes) do
      local zone = zoneOf(node)
      perZone[zone] = (perZone[zone] or 0) + node.service_tasks
    end
    return perZone
  end,

  -- Fewer tasks of the service in the node's zone first, then fewer on the node itself.
  score = function(task, node, perZone)
    return -(perZone[zoneOf(node)] * 1000 + node.service_tasks)
  end,
}
