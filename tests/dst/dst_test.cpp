// Deterministic simulation of whole Raft clusters (see sim_cluster.h): for each seed, a 3- or
// 5-member cluster runs with message loss, duplication, delay, reordering, partitions,
// one-way links and crashes (some between persisting and sending) while clients write and
// read; safety is checked at every step, then the cluster is healed and must make progress,
// and the client history must be linearizable with no acknowledged write lost.
//
// A failure names its seed; `dst_test Seed` style reproduction: set SHOAL_DST_SEED=N to run
// just that seed (bit-for-bit the same run).
#include <cppunit/extensions/HelperMacros.h>

#include <cstdlib>
#include <iostream>

#include "tests/dst/sim_cluster.h"

using shoal::dst::Faults;
using shoal::dst::SimCluster;

namespace {

struct Outcome {
  bool ok;
  std::string failure;
  uint64_t trace;
  std::size_t committed;
  std::size_t acked;
  uint64_t snapshots;
  uint64_t membership;
  uint64_t diskLosses;
};

Outcome runSeed(int nodes, uint64_t seed) {
  SimCluster c(nodes, seed, Faults::forSeed(seed));
  c.run(600);
  bool ok = !c.failed() && c.settle(1500) && c.checkHistory();
  return {ok,
          c.failure(),
          c.traceHash(),
          c.committedCount(),
          c.ackedCount(),
          c.snapshotsInstalled(),
          c.membershipChanges(),
          c.diskLosses()};
}

void runSeeds(int nodes, uint64_t first, uint64_t count) {
  if (const char* only = std::getenv("SHOAL_DST_SEED")) {
    first = std::strtoull(only, nullptr, 10);
    count = 1;
  }
  std::size_t committed = 0, acked = 0, snapshots = 0, membership = 0, losses = 0;
  for (uint64_t seed = first; seed < first + count; ++seed) {
    Outcome o = runSeed(nodes, seed);
    if (!o.ok) {
      CPPUNIT_FAIL("seed " + std::to_string(seed) + " (" + std::to_string(nodes) +
                   " nodes) failed: " + o.failure +
                   "\nreproduce: SHOAL_DST_SEED=" + std::to_string(seed) + " dst_test");
    }
    committed += o.committed;
    acked += o.acked;
    snapshots += o.snapshots;
    membership += o.membership;
    losses += o.diskLosses;
  }
  std::cerr << " [" << nodes << " nodes, " << count << " seeds: " << committed
            << " entries committed, " << acked << " client ops acknowledged, " << snapshots
            << " snapshots installed, " << membership << " membership changes, " << losses
            << " crashes that lost un-synced or torn writes] ";
  // The runs must do real work, or the checks above prove nothing.
  CPPUNIT_ASSERT(acked > count * 10);
  CPPUNIT_ASSERT(snapshots > count / 10);
  CPPUNIT_ASSERT(membership > count / 10);
  CPPUNIT_ASSERT(losses > count / 10);
}

}  // namespace

class DstTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(DstTest);
  CPPUNIT_TEST(testThreeManagerClusters);
  CPPUNIT_TEST(testFiveManagerClusters);
  CPPUNIT_TEST(testSeedReproducesBitForBit);
  CPPUNIT_TEST_SUITE_END();

 public:
  void testThreeManagerClusters() { runSeeds(3, 1, 600); }
  void testFiveManagerClusters() { runSeeds(5, 100001, 400); }

  void testSeedReproducesBitForBit() {
    Outcome a = runSeed(3, 4242), b = runSeed(3, 4242), c = runSeed(3, 4243);
    CPPUNIT_ASSERT(a.ok && b.ok && c.ok);
    CPPUNIT_ASSERT_EQUAL(a.trace, b.trace);
    CPPUNIT_ASSERT_EQUAL(a.committed, b.committed);
    CPPUNIT_ASSERT(a.trace != c.trace);
  }
};

CPPUNIT_TEST_SUITE_REGISTRATION(DstTest);
