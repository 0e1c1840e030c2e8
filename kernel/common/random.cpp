#include "kernel/common/random.h"

#include <pthread.h>
#include <sys/random.h>

#include <atomic>
#include <cerrno>
#include <iterator>

#include "kernel/common/assert.h"
#include "kernel/common/clock.h"

namespace shoal {

SystemClock& SystemClock::instance() {
  static SystemClock clock;
  return clock;
}

uint64_t Random::uniform(uint64_t bound) {
  SHOAL_ASSERT(bound > 0);
  // Reject the top partial range so every value is equally likely.
  const uint64_t limit = UINT64_MAX - (UINT64_MAX % bound);
  uint64_t v;
  do {
    v = next();
  } while (v >= limit);
  return v % bound;
}

double Random::real() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

SystemRandom& SystemRandom::instance() {
  static SystemRandom random;
  return random;
}

namespace {

// Bumped in a forked child: bits a thread buffered before the fork are the parent's too, and
// are thrown away rather than used twice.
std::atomic<uint64_t> forks{0};

void fillFromKernel(void* buf, std::size_t len) {
  char* p = static_cast<char*>(buf);
  std::size_t got = 0;
  while (got < len) {
    ssize_t n = getrandom(p + got, len - got, 0);
    if (n < 0) {
      SHOAL_CHECK(errno == EINTR);
      continue;
    }
    got += static_cast<std::size_t>(n);
  }
}

}  // namespace

uint64_t SystemRandom::next() {
  // One getrandom per 32 draws, per thread: an id takes 25 of them, and the orchestrator makes
  // thousands of ids per transaction (a syscall each was a sixth of its time).
  static const bool registered = [] {
    pthread_atfork(nullptr, nullptr, [] { forks.fetch_add(1, std::memory_order_relaxed); });
    return true;
  }();
  (void)registered;
  struct Buffer {
    uint64_t words[32];
    std::size_t left = 0;
    uint64_t fork = 0;
  };
  thread_local Buffer buffer;
  const uint64_t fork = forks.load(std::memory_order_relaxed);
  if (buffer.left == 0 || buffer.fork != fork) {
    fillFromKernel(buffer.words, sizeof buffer.words);
    buffer.left = std::size(buffer.words);
    buffer.fork = fork;
  }
  const uint64_t v = buffer.words[--buffer.left];
  buffer.words[buffer.left] = 0;  // drawn bits are not kept around
  return v;
}

namespace {
uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
}  // namespace

SeededRandom::SeededRandom(uint64_t seed) {
  for (auto& s : s_) s = splitmix64(seed);
}

uint64_t SeededRandom::next() {
  std::lock_guard<std::mutex> lock(mu_);
  const uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

std::string newId(Random& random) {
  static constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  std::string id(25, '0');
  for (char& c : id) c = kAlphabet[random.uniform(sizeof kAlphabet - 1)];
  return id;
}

}  // namespace shoal
