// What the lab benchmarks share: the test images, and a two-node swarm on scripts/lab with
// real containers (runtime-runc), node1 the manager, the test image loaded on both, and an
// overlay network "benchnet". A failure prints what failed and exits (benchmarks have no
// test runner to report to).
#pragma once

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "tests/support/lab.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

namespace shoal::test {

// The middle value of a benchmark's rounds (0 for none).
inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

inline void benchMust(const RunResult& r, const std::string& what) {
  if (r.exitCode != 0) {
    std::cerr << "bench: " << what << " failed: " << r.out << r.err << '\n';
    std::exit(1);
  }
}

class BenchSwarm {
 public:
  BenchSwarm() {
    benchMust(runCommand(
                  {std::string(SHOAL_SOURCE_DIR) + "/scripts/test-images", "build", images_.path()},
                  std::chrono::seconds(120)),
              "test-images build");
    lab_ = std::make_unique<Lab>(2, std::vector<std::string>{"SHOAL_LAB_RUNTIME=runtime-runc"});
    Lab& lab = *lab_;
    lab.downAtExit();  // benchMust exits on a failed step
    benchMust(lab.on("node1", {"swarm", "init", "--advertise-addr", lab.ip("node1"),
                               "--dispatcher-heartbeat", "1s"}),
              "swarm init");
    const std::string token = trim(lab.on("node1", {"swarm", "join-token", "-q", "worker"}).out);
    benchMust(lab.on("node2", {"swarm", "join", "--token", token, "--advertise-addr",
                               lab.ip("node2"), lab.ip("node1") + ":2377"}),
              "join");
    for (const char* node : {"node1", "node2"}) {
      benchMust(lab.on(node, {"image", "load", "-i", images_.file("shoal-test-oci.tar")}),
                "image load");
    }
    benchMust(lab.on("node1", {"network", "create", "--driver", "overlay", "benchnet"}),
              "network create");
  }
  Lab& lab() { return *lab_; }
  static constexpr const char* kImage = "localhost/shoal-test:v1";

 private:
  TempDir images_;
  std::unique_ptr<Lab> lab_;  // down before images_ goes
};

}  // namespace shoal::test
