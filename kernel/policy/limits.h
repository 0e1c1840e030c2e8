#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>

#include "kernel/common/clock.h"

namespace shoal::policy {

// What one policy may spend. The instruction budget and the deadline apply to each call into
// the policy (loading it, binding a snapshot, one filter or score batch over all nodes); the
// memory budget to the policy's Lua state as a whole, snapshot tables included (about 2 KB per
// node). A call that exceeds one fails with a Status naming the policy and the limit.
struct Limits {
  uint64_t instructions = 10'000'000;           // Lua VM instructions per call
  std::chrono::milliseconds deadline{250};      // wall-clock time per call
  std::size_t memoryBytes = 32u * 1024 * 1024;  // bytes the Lua state may hold
  // The deadline's clock; nullptr is SystemClock. A simulated clock that does not advance
  // leaves only the instruction budget.
  const Clock* clock = nullptr;
};

}  // namespace shoal::policy
