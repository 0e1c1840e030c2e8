#pragma once

#include <cstdint>
#include <mutex>
#include <string>

namespace shoal {

// Randomness, behind an interface so tests and the simulator can make it repeatable.
class Random {
 public:
  virtual ~Random() = default;
  // 64 uniformly distributed bits.
  virtual uint64_t next() = 0;
  // Uniform in [0, bound); bound > 0. Unbiased (rejection sampling).
  uint64_t uniform(uint64_t bound);
  // Uniform in [0, 1).
  double real();
};

// Cryptographically strong bits from the kernel (getrandom), drawn 256 bytes at a time into a
// per-thread buffer (discarded in a forked child). THREAD: safe.
class SystemRandom final : public Random {
 public:
  static SystemRandom& instance();
  uint64_t next() override;
};

// A fast deterministic generator (xoshiro256**, seeded through splitmix64). The same seed
// gives the same sequence on every machine. THREAD: guarded by an internal mutex.
class SeededRandom final : public Random {
 public:
  explicit SeededRandom(uint64_t seed);
  uint64_t next() override;

 private:
  std::mutex mu_;
  uint64_t s_[4];  // guarded by mu_
};

// A new object id: 25 characters of [a-z0-9], like Swarm's.
std::string newId(Random& random);

}  // namespace shoal
