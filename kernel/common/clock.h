#pragma once

#include <chrono>
#include <cstdint>

namespace shoal {

// Time, behind an interface so the manager can run under a deterministic simulator.
// THREAD: implementations are safe to call from any thread.
class Clock {
 public:
  using WallTime = std::chrono::system_clock::time_point;
  using MonoTime = std::chrono::steady_clock::time_point;

  virtual ~Clock() = default;
  virtual WallTime now() const = 0;
  virtual MonoTime monotonic() const = 0;

  int64_t nowNanos() const {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(now().time_since_epoch()).count();
  }
  int64_t monotonicNanos() const {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(monotonic().time_since_epoch())
        .count();
  }
};

// The real clocks.
class SystemClock final : public Clock {
 public:
  static SystemClock& instance();
  WallTime now() const override { return std::chrono::system_clock::now(); }
  MonoTime monotonic() const override { return std::chrono::steady_clock::now(); }
};

}  // namespace shoal
