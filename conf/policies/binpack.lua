-- binpack: fill nodes up before starting on empty ones.
--
-- Among the nodes that can still take the task, prefer the one that will have the least
-- memory and CPU left once the task is placed (the opposite of spreading), so whole nodes stay
-- free for big tasks, or can be drained and switched off.
--
--   shoal policy create binpack binpack.lua
--   shoal service create --placement-policy binpack ...

-- The share of `total` in use once `reserved` more is placed (0 when the node reports none).
local function usedAfter(total, free, reserved)
  if total <= 0 then return 0 end
  return (total - free + reserved) / total
end

return shoal.policy{
  name = "binpack",
  description = "Prefer the nodes with the least free memory and CPU left after placement",

  -- Only nodes that still fit the task's reservations.
  filter = function(task, node)
    local want = task.reservations
    if want.memory_bytes > 0 and node.memory_free < want.memory_bytes then
      return false, "not enough free memory"
    end
    if want.nano_cpus > 0 and node.nano_cpus_free < want.nano_cpus then
      return false, "not enough free CPU"
    end
    return true
  end,

  -- 0 (empty after placement) .. 100 (full after placement): memory and CPU averaged over the
  -- resources the node reports.
  score = function(task, node)
    local want = task.reservations
    local sum, parts = 0, 0
    if node.memory_bytes > 0 then
      sum = sum + usedAfter(node.memory_bytes, node.memory_free, want.memory_bytes)
      parts = parts + 1
    end
    if node.nano_cpus > 0 then
      sum = sum + usedAfter(node.nano_cpus, node.nano_cpus_free, want.nano_cpus)
      parts = parts + 1
    end
    if parts == 0 then return 0 end
    return 100 * sum / parts
  end,
}
