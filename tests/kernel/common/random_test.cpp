#include <cppunit/extensions/HelperMacros.h>

#include <sys/wait.h>
#include <unistd.h>

#include <set>

#include "kernel/common/random.h"

class RandomTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(RandomTest);
  CPPUNIT_TEST(testSeededIsRepeatable);
  CPPUNIT_TEST(testUniformStaysInRange);
  CPPUNIT_TEST(testIdsLookLikeSwarmIds);
  CPPUNIT_TEST(testForkedChildDrawsOtherBitsThanItsParent);
  CPPUNIT_TEST_SUITE_END();

 public:
  void testSeededIsRepeatable() {
    shoal::SeededRandom a(1234), b(1234), c(99);
    bool differs = false;
    for (int i = 0; i < 100; ++i) {
      uint64_t x = a.next();
      CPPUNIT_ASSERT_EQUAL(x, b.next());
      differs = differs || x != c.next();
    }
    CPPUNIT_ASSERT(differs);
  }

  void testUniformStaysInRange() {
    shoal::SeededRandom r(7);
    std::set<uint64_t> seen;
    for (int i = 0; i < 1000; ++i) {
      uint64_t v = r.uniform(6);
      CPPUNIT_ASSERT(v < 6);
      seen.insert(v);
    }
    CPPUNIT_ASSERT_EQUAL(std::size_t(6), seen.size());
    double d = r.real();
    CPPUNIT_ASSERT(d >= 0.0 && d < 1.0);
  }

  void testIdsLookLikeSwarmIds() {
    std::set<std::string> ids;
    for (int i = 0; i < 200; ++i) {
      std::string id = shoal::newId(shoal::SystemRandom::instance());
      CPPUNIT_ASSERT_EQUAL(std::size_t(25), id.size());
      for (char c : id) CPPUNIT_ASSERT((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'));
      ids.insert(id);
    }
    CPPUNIT_ASSERT_EQUAL(std::size_t(200), ids.size());
  }

  // The bits are buffered per thread: a child forked with some left must not draw the same
  // ones as its parent.
  void testForkedChildDrawsOtherBitsThanItsParent() {
    shoal::SystemRandom& r = shoal::SystemRandom::instance();
    (void)r.next();  // the buffer now holds bits
    int fds[2];
    CPPUNIT_ASSERT_EQUAL(0, ::pipe(fds));
    const pid_t child = ::fork();
    CPPUNIT_ASSERT(child >= 0);
    if (child == 0) {
      uint64_t drawn[4];
      for (auto& d : drawn) d = r.next();
      const bool sent = ::write(fds[1], drawn, sizeof drawn) == static_cast<ssize_t>(sizeof drawn);
      ::_exit(sent ? 0 : 1);
    }
    ::close(fds[1]);
    uint64_t mine[4];
    for (auto& d : mine) d = r.next();
    uint64_t theirs[4] = {};
    const ssize_t got = ::read(fds[0], theirs, sizeof theirs);
    ::close(fds[0]);
    int status = 0;
    CPPUNIT_ASSERT_EQUAL(child, ::waitpid(child, &status, 0));
    CPPUNIT_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CPPUNIT_ASSERT_EQUAL(static_cast<ssize_t>(sizeof theirs), got);
    for (int i = 0; i < 4; ++i) CPPUNIT_ASSERT(mine[i] != theirs[i]);
  }
};

CPPUNIT_TEST_SUITE_REGISTRATION(RandomTest);
