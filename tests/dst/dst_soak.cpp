// dst_soak [--seconds S] [--first SEED] [--nodes 3|5]: runs simulation seeds until the time is
// up, printing throughput and stopping at the first failing seed (exit 1) with its number.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "tests/dst/sim_cluster.h"

int main(int argc, char** argv) {
  double seconds = 60;
  uint64_t seed = 1000000;
  int nodes = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--seconds")) seconds = std::atof(argv[i + 1]);
    if (!std::strcmp(argv[i], "--first")) seed = std::strtoull(argv[i + 1], nullptr, 10);
    if (!std::strcmp(argv[i], "--nodes")) nodes = std::atoi(argv[i + 1]);
  }
  auto start = std::chrono::steady_clock::now();
  uint64_t runs = 0;
  for (;; ++seed, ++runs) {
    double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (elapsed >= seconds) break;
    const shoal::dst::Faults f = shoal::dst::Faults::forSeed(seed);
    shoal::dst::SimCluster c(nodes, seed, f);
    c.run(2000);
    if (c.failed() || !c.settle(3000) || !c.checkHistory()) {
      std::printf("FAILED seed %llu (%d nodes): %s\n", static_cast<unsigned long long>(seed), nodes,
                  c.failure().c_str());
      return 1;
    }
  }
  double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("dst_soak: %llu seeds (%d nodes, 2000 ticks each) passed in %.1f s (%.1f seeds/s)\n",
              static_cast<unsigned long long>(runs), nodes, elapsed, runs / elapsed);
  return 0;
}
