-- keep-off-maintenance: no new tasks on nodes labelled maintenance=true.
--
-- Tasks already on the node keep running (use `shoal node update --availability drain` to move
-- them); this only keeps new ones away while the label is set.
--
--   shoal node update --label-add maintenance=true node-3
--   shoal policy create keep-off-maintenance keep-off-maintenance.lua
--   shoal service create --placement-policy keep-off-maintenance ...

return shoal.policy{
  name = "keep-off-maintenance",
  description = "Keep new tasks off nodes labelled maintenance=true",

  filter = function(task, node)
    local label = node.labels.maintenance
    if label ~= nil and label:lower() == "true" then
      return false, "node is in maintenance"
    end
    return true
  end,
}
