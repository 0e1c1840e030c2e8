#pragma once

#include <cstddef>

namespace shoal::store {

// Bounds on what the store accepts and keeps. Transaction bounds are part of the replicated
// state machine's rules: every manager must run with the same values, or replicas could
// disagree about which changesets to refuse.
struct StoreLimits {
  // A transaction (ChangeSet) touches at most this many objects ...
  std::size_t maxTxObjects = 10000;
  // ... and encodes to at most this many bytes. Larger ones are refused, never truncated.
  std::size_t maxTxBytes = 64u << 20;
  // Watch history: the most recent committed changesets kept for watch(fromVersion), bounded
  // by count and by the events they hold (the newest one is always kept).
  std::size_t historyChangeSets = 10000;
  std::size_t historyEvents = 1000000;
  // A watch may fall at most this many matching events behind before it is cut off.
  std::size_t watchQueueEvents = 10000;
};

}  // namespace shoal::store
