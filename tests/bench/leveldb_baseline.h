#pragma once

namespace shoal::bench {

// Synced LevelDB writes per second, one 200-byte value per fsync, for `seconds`: the rate at
// which a member could commit if every command were persisted on its own. Benchmarks print
// their figures as ratios against it, measured in the same run (machines here are noisy).
double syncedLevelDbWritesPerSecond(double seconds);

}  // namespace shoal::bench
