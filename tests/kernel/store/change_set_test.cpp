// ChangeSet encoding: round trips, and every kind of bad input is a clear error, never a crash.
#include <Poco/Checksum.h>
#include <cppunit/extensions/HelperMacros.h>

#include "kernel/common/random.h"
#include "kernel/store/change_set.h"
#include "kernel/store/codec.h"
#include "tests/kernel/store/store_test_util.h"

using namespace shoal::store;
using storetest::contains;

namespace {

Op keyOp(OpType type, Kind kind, const std::string& id, uint64_t version) {
  Op op;
  op.type = type;
  op.expectedVersion = version;
  op.object.kind = kind;
  op.object.id = id;
  return op;
}

ChangeSet sample() {
  ChangeSet cs;
  cs.ops.push_back(Op{OpType::kCreate, 0, storetest::task("t1", "s1", 1, "n1")});
  Object svc = storetest::service("s1", "web");
  svc.labels = {{"env", "prod"}, {"team", "caf\xc3\xa9"}};
  cs.ops.push_back(Op{OpType::kUpdate, 41, svc});
  cs.ops.push_back(Op{OpType::kUpdate, 3, storetest::node("n1", NodeRole::kManager)});
  cs.ops.push_back(keyOp(OpType::kDelete, Kind::kSecret, "sec1", 9));
  cs.ops.push_back(keyOp(OpType::kCheck, Kind::kNetwork, "net1", 1ull << 40));
  return cs;
}

// Recomputes the CRC trailer, so a test can reach the parser behind the checksum.
std::string reseal(std::string bytes) {
  bytes.resize(bytes.size() - 4);
  Poco::Checksum c(Poco::Checksum::TYPE_CRC32);
  c.update(bytes.data(), static_cast<unsigned>(bytes.size()));
  putFixed32(bytes, c.checksum());
  return bytes;
}

std::string errorOf(std::string_view bytes) {
  auto r = decodeChangeSet(bytes);
  CPPUNIT_ASSERT_MESSAGE("expected a decode error", !r.isOk());
  CPPUNIT_ASSERT(r.status().code() == shoal::Status::Code::kInvalidArgument);
  return r.status().message();
}

}  // namespace

class ChangeSetTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(ChangeSetTest);
  CPPUNIT_TEST(testRoundTrip);
  CPPUNIT_TEST(testEmptyRoundTrip);
  CPPUNIT_TEST(testEncodedOpSizeIsExact);
  CPPUNIT_TEST(testEveryTruncationIsAnError);
  CPPUNIT_TEST(testEveryCorruptedByteIsDetected);
  CPPUNIT_TEST(testWrongMagicAndFormatVersion);
  CPPUNIT_TEST(testMalformedBodyBehindAValidChecksum);
  CPPUNIT_TEST(testRandomBytesNeverCrash);
  CPPUNIT_TEST_SUITE_END();

 public:
  void testRoundTrip() {
    ChangeSet cs = sample();
    std::string bytes = encodeChangeSet(cs);
    auto back = decodeChangeSet(bytes);
    CPPUNIT_ASSERT_MESSAGE(back.status().toString(), back.isOk());
    CPPUNIT_ASSERT(*back == cs);
    CPPUNIT_ASSERT_EQUAL(bytes, encodeChangeSet(*back));  // canonical
  }

  void testEmptyRoundTrip() {
    auto back = decodeChangeSet(encodeChangeSet(ChangeSet{}));
    CPPUNIT_ASSERT(back.isOk() && back->empty());
  }

  void testEncodedOpSizeIsExact() {
    ChangeSet cs = sample();
    std::size_t sum = 0;
    for (const Op& op : cs.ops) sum += encodedOpSize(op);
    // magic + format + count (1 byte for 5 ops) + CRC
    CPPUNIT_ASSERT_EQUAL(sum + 4 + 1 + 1 + 4, encodeChangeSet(cs).size());
  }

  void testEveryTruncationIsAnError() {
    std::string bytes = encodeChangeSet(sample());
    for (std::size_t n = 0; n < bytes.size(); ++n) {
      CPPUNIT_ASSERT(!decodeChangeSet(std::string_view(bytes).substr(0, n)).isOk());
    }
    CPPUNIT_ASSERT(contains(errorOf(bytes.substr(0, 3)), "too short"));
  }

  void testEveryCorruptedByteIsDetected() {
    const std::string bytes = encodeChangeSet(sample());
    for (std::size_t i = 0; i < bytes.size(); ++i) {
      for (unsigned char flip : {0x01, 0x80, 0xff}) {
        std::string bad = bytes;
        bad[i] = static_cast<char>(bad[i] ^ flip);
        CPPUNIT_ASSERT_MESSAGE("byte " + std::to_string(i), !decodeChangeSet(bad).isOk());
      }
    }
    std::string bad = bytes;
    bad[20] ^= 0x10;
    CPPUNIT_ASSERT(contains(errorOf(bad), "checksum mismatch"));
  }

  void testWrongMagicAndFormatVersion() {
    std::string bytes = encodeChangeSet(sample());
    std::string magic = bytes;
    magic[0] = 'X';
    CPPUNIT_ASSERT(contains(errorOf(magic), "do not start with \"SHCS\""));
    std::string future = bytes;
    future[4] = 2;
    CPPUNIT_ASSERT_EQUAL(
        std::string("changeset format version 2 is not supported (this build reads version 1)"),
        errorOf(reseal(future)));
  }

  void testMalformedBodyBehindAValidChecksum() {
    ChangeSet one;
    one.ops.push_back(keyOp(OpType::kDelete, Kind::kTask, "t1", 5));
    const std::string bytes = encodeChangeSet(one);  // SHCS 01 | 01 | 03 05 04 02 't' '1' | crc
    std::string s = bytes;
    s[6] = 9;  // op type
    CPPUNIT_ASSERT_EQUAL(std::string("corrupt changeset: unknown operation type 9 at byte 6"),
                         errorOf(reseal(s)));
    s = bytes;
    s[8] = 42;  // kind
    CPPUNIT_ASSERT(contains(errorOf(reseal(s)), "unknown object kind 42"));
    s = bytes;
    s[9] = 100;  // id length
    CPPUNIT_ASSERT(
        contains(errorOf(reseal(s)), "length 100 runs past the end reading the object id"));
    s = bytes;
    s[5] = 0x7f;  // op count
    CPPUNIT_ASSERT(contains(errorOf(reseal(s)), "operation count 127 exceeds the remaining bytes"));
    s = bytes;
    s.insert(s.size() - 4, "zz");
    CPPUNIT_ASSERT(contains(errorOf(reseal(s)), "2 unexpected bytes after the last operation"));
    // A varint that never ends.
    s = bytes;
    s.replace(7, 1, std::string(11, '\xff'));
    CPPUNIT_ASSERT(contains(errorOf(reseal(s)), "varint"));
  }

  // Garbage behind a valid header and checksum reaches the parser: it must only ever say no
  // (or decode something well-formed), never crash or allocate wildly (ASan builds check).
  void testRandomBytesNeverCrash() {
    shoal::SeededRandom random(7);
    const std::string good = encodeChangeSet(sample());
    for (int round = 0; round < 3000; ++round) {
      std::string s;
      if (round % 2 == 0) {
        s = good;  // mutate a real changeset in a few places
        for (int k = 0; k < 3; ++k) {
          s[5 + random.uniform(s.size() - 9)] = static_cast<char>(random.next());
        }
      } else {
        s = "SHCS";
        s += '\x01';
        std::size_t n = random.uniform(64);
        for (std::size_t i = 0; i < n; ++i) s += static_cast<char>(random.next());
        s += "0000";
      }
      auto r = decodeChangeSet(reseal(s));
      if (!r.isOk()) CPPUNIT_ASSERT(!r.status().message().empty());
    }
  }
};

CPPUNIT_TEST_SUITE_REGISTRATION(ChangeSetTest);
