// RaftStorage: what a member persists comes back after a restart (or a crash), every write is
// synced, and damage on disk is reported as an error naming what is wrong, never a crash or a
// silently different state.
#include <cppunit/extensions/HelperMacros.h>
#include <leveldb/db.h>
#include <leveldb/env.h>
#include <leveldb/helpers/memenv.h>
#include <leveldb/iterator.h>
#include <leveldb/options.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "kernel/raft/raft_storage.h"
#include "tests/support/temp_dir.h"

using shoal::Result;
using shoal::Status;
using shoal::raft::crc32c;
using shoal::raft::Durable;
using shoal::raft::Entry;
using shoal::raft::HardState;
using shoal::raft::Index;
using shoal::raft::RaftStorage;
using shoal::raft::RaftStorageOptions;
using shoal::raft::Snapshot;
using shoal::raft::Term;
using shoal::test::TempDir;
namespace fs = std::filesystem;

namespace {

Entry entry(Index index, Term term, std::string data = "") {
  Entry e;
  e.index = index;
  e.term = term;
  e.data = std::move(data);
  return e;
}

// Entries [from, to] all of one term, each with data naming it.
std::vector<Entry> entries(Index from, Index to, Term term) {
  std::vector<Entry> out;
  for (Index i = from; i <= to; ++i) out.push_back(entry(i, term, "cmd-" + std::to_string(i)));
  return out;
}

HardState hardState(Term term, shoal::raft::NodeId vote, Index commit) {
  HardState hs;
  hs.term = term;
  hs.vote = vote;
  hs.commit = commit;
  return hs;
}

Snapshot snapshot(Index index, Term term, std::string data = "state") {
  Snapshot s;
  s.index = index;
  s.term = term;
  s.voters = {1, 2, 3};
  s.data = std::move(data);
  return s;
}

std::unique_ptr<RaftStorage> openOk(const std::string& dir, const RaftStorageOptions& o = {}) {
  Result<std::unique_ptr<RaftStorage>> r = RaftStorage::open(dir, o);
  CPPUNIT_ASSERT_MESSAGE(r.status().toString(), r.isOk());
  return std::move(r).value();
}

Durable loadOk(RaftStorage& s) {
  Result<Durable> r = s.load();
  CPPUNIT_ASSERT_MESSAGE(r.status().toString(), r.isOk());
  return std::move(r).value();
}

void saveOk(RaftStorage& s, const std::optional<HardState>& hs, const std::vector<Entry>& es,
            const std::optional<Snapshot>& snap = std::nullopt) {
  Status st = s.save(hs, es, snap);
  CPPUNIT_ASSERT_MESSAGE(st.toString(), st.isOk());
}

void assertContains(const std::string& haystack, const std::string& needle) {
  CPPUNIT_ASSERT_MESSAGE("'" + needle + "' not in: " + haystack,
                         haystack.find(needle) != std::string::npos);
}

// The failure of a load after opening, or of the open itself.
Status openAndLoad(const std::string& dir) {
  Result<std::unique_ptr<RaftStorage>> r = RaftStorage::open(dir);
  if (!r) return r.status();
  Result<Durable> d = (*r)->load();
  return d ? Status::ok() : d.status();
}

bool sameSnapshot(const std::optional<Snapshot>& a, const std::optional<Snapshot>& b) {
  if (a.has_value() != b.has_value()) return false;
  if (!a) return true;
  return a->index == b->index && a->term == b->term && a->voters == b->voters &&
         a->learners == b->learners && a->data == b->data;
}

bool sameDurable(const Durable& a, const Durable& b) {
  return a.hardState == b.hardState && sameSnapshot(a.snapshot, b.snapshot) &&
         a.entries == b.entries;
}

// The on-disk key of entry `index`, as the README documents it.
std::string entryKey(Index index) {
  std::string key(1, 'E');
  for (int i = 7; i >= 0; --i) key.push_back(static_cast<char>(index >> (8 * i)));
  return key;
}

// A second, raw handle on the database (the storage must be closed), to damage it.
std::unique_ptr<leveldb::DB> rawDb(const std::string& dir, bool create = false) {
  leveldb::Options o;
  o.create_if_missing = create;
  leveldb::DB* db = nullptr;
  leveldb::Status s = leveldb::DB::Open(o, dir, &db);
  CPPUNIT_ASSERT_MESSAGE(s.ToString(), s.ok());
  return std::unique_ptr<leveldb::DB>(db);
}

std::string rawGet(leveldb::DB& db, const std::string& key) {
  std::string v;
  leveldb::Status s = db.Get(leveldb::ReadOptions(), key, &v);
  CPPUNIT_ASSERT_MESSAGE(s.ToString(), s.ok());
  return v;
}

void rawPut(leveldb::DB& db, const std::string& key, const std::string& value) {
  CPPUNIT_ASSERT(db.Put(leveldb::WriteOptions(), key, value).ok());
}

void rawDelete(leveldb::DB& db, const std::string& key) {
  CPPUNIT_ASSERT(db.Delete(leveldb::WriteOptions(), key).ok());
}

// The file in `dir` with the given extension and the highest number (the newest).
std::string newestFile(const std::string& dir, const std::string& ext) {
  std::string best;
  for (const auto& f : fs::directory_iterator(dir)) {
    if (f.path().extension() != ext) continue;
    if (best.empty() || f.path().filename().string() > fs::path(best).filename().string())
      best = f.path().string();
  }
  CPPUNIT_ASSERT_MESSAGE("no " + ext + " file in " + dir, !best.empty());
  return best;
}

// Counts syncs of LevelDB's write-ahead log, and fails every sync when told to.
class SyncCountingEnv : public leveldb::EnvWrapper {
 public:
  SyncCountingEnv() : EnvWrapper(leveldb::Env::Default()) {}

  leveldb::Status NewWritableFile(const std::string& f, leveldb::WritableFile** r) override {
    return wrap(target()->NewWritableFile(f, r), f, r);
  }
  leveldb::Status NewAppendableFile(const std::string& f, leveldb::WritableFile** r) override {
    return wrap(target()->NewAppendableFile(f, r), f, r);
  }

  std::atomic<int> logSyncs{0};
  std::atomic<bool> failSyncs{false};

 private:
  class File : public leveldb::WritableFile {
   public:
    File(SyncCountingEnv& env, leveldb::WritableFile* base, bool isLog)
        : env_(env), base_(base), isLog_(isLog) {}
    leveldb::Status Append(const leveldb::Slice& data) override { return base_->Append(data); }
    leveldb::Status Close() override { return base_->Close(); }
    leveldb::Status Flush() override { return base_->Flush(); }
    leveldb::Status Sync() override {
      if (env_.failSyncs) return leveldb::Status::IOError("injected", "sync failure");
      if (isLog_) ++env_.logSyncs;
      return base_->Sync();
    }

   private:
    SyncCountingEnv& env_;
    std::unique_ptr<leveldb::WritableFile> base_;
    bool isLog_;
  };

  leveldb::Status wrap(leveldb::Status s, const std::string& name, leveldb::WritableFile** r) {
    if (s.ok()) *r = new File(*this, *r, name.ends_with(".log"));
    return s;
  }
};

}  // namespace

class RaftStorageTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(RaftStorageTest);
  CPPUNIT_TEST(testCrc32cMatchesTheCastagnoliCheckValues);
  CPPUNIT_TEST(testNewDirectoryLoadsEmpty);
  CPPUNIT_TEST(testHardStateEntriesAndSnapshotSurviveReopen);
  CPPUNIT_TEST(testOnDiskFormatIsAsDocumented);
  CPPUNIT_TEST(testConflictingEntriesTruncateTheLog);
  CPPUNIT_TEST(testSnapshotReplacesTheEntriesItCovers);
  CPPUNIT_TEST(testSnapshotThatDisagreesWithTheLogDiscardsIt);
  CPPUNIT_TEST(testCompactDeletesCoveredEntriesAndKeepsTheRest);
  CPPUNIT_TEST(testCompactRefusesWhatTheLogCannotBack);
  CPPUNIT_TEST(testSaveRefusesAStateLoadWouldReject);
  CPPUNIT_TEST(testFlippedBytesInAValueAreDetectedNamingTheRecord);
  CPPUNIT_TEST(testValueUnderTheWrongKeyIsDetected);
  CPPUNIT_TEST(testMissingEntryIsDetected);
  CPPUNIT_TEST(testTermGoingDownIsDetected);
  CPPUNIT_TEST(testCommitBeyondTheLogIsDetected);
  CPPUNIT_TEST(testUnknownKeyIsDetected);
  CPPUNIT_TEST(testUnknownFormatVersionIsRefused);
  CPPUNIT_TEST(testForeignDatabaseIsRefused);
  CPPUNIT_TEST(testDirectoryWithOtherFilesIsRefused);
  CPPUNIT_TEST(testLeftoversOfAnInterruptedCreationAreFine);
  CPPUNIT_TEST(testJunkCurrentFileFailsCleanly);
  CPPUNIT_TEST(testTruncatedTableFileFailsCleanly);
  CPPUNIT_TEST(testDamagedWriteAheadLogFailsCleanly);
  CPPUNIT_TEST(testTornLogTailGivesAnEarlierSavedState);
  CPPUNIT_TEST(testSecondOpenOfTheSameDirectoryFails);
  CPPUNIT_TEST(testEveryPromiseIsSynced);
  CPPUNIT_TEST(testFailedSyncStopsFurtherWrites);
  CPPUNIT_TEST(testSavedStateSurvivesProcessDeath);
  CPPUNIT_TEST(testRunsOnAnInMemoryEnv);
  CPPUNIT_TEST(testDataKeySealsEveryRecord);
  CPPUNIT_TEST_SUITE_END();

 public:
  // With a data key nothing readable reaches the disk (the bytes of every LevelDB file are
  // searched), the records come back with the key, and without it or with another key the
  // load fails naming the record; plain records from before the key still read.
  void testDataKeySealsEveryRecord() {
    TempDir dir;
    const std::string path = dir.file("raft");
    {
      auto plain = openOk(path);  // written before the swarm had a data key
      CPPUNIT_ASSERT(plain->save(hardState(1, 1, 0), {entry(1, 1, "plain-old-entry")}, {}).isOk());
    }
    RaftStorageOptions sealed;
    sealed.dataKey = std::string(32, 'k');
    {
      auto s = openOk(path, sealed);
      CPPUNIT_ASSERT(s->save(hardState(2, 1, 1), {entry(2, 2, "top-secret-entry")}, {}).isOk());
      Status c = s->compact(1, snapshot(1, 1, "secret-snapshot-state"));
      CPPUNIT_ASSERT_MESSAGE(c.toString(), c.isOk());
    }
    std::string all;
    for (const auto& f : fs::directory_iterator(path)) {
      std::ifstream in(f.path(), std::ios::binary);
      all.append(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
    CPPUNIT_ASSERT(all.find("top-secret-entry") == std::string::npos);
    CPPUNIT_ASSERT(all.find("secret-snapshot-state") == std::string::npos);
    {
      auto s = openOk(path, sealed);
      Durable d = loadOk(*s);
      CPPUNIT_ASSERT_EQUAL(std::size_t{1}, d.entries.size());
      CPPUNIT_ASSERT_EQUAL(std::string("top-secret-entry"), d.entries[0].data);
      CPPUNIT_ASSERT(d.snapshot && d.snapshot->data == "secret-snapshot-state");
      CPPUNIT_ASSERT_EQUAL(Term{2}, d.hardState.term);
    }
    {
      auto s = openOk(path);
      Result<Durable> r = s->load();
      CPPUNIT_ASSERT(!r.isOk());
      CPPUNIT_ASSERT_MESSAGE(r.status().message(),
                             r.status().message().find("no data key") != std::string::npos);
    }
    {
      RaftStorageOptions wrong;
      wrong.dataKey = std::string(32, 'x');
      auto s = openOk(path, wrong);
      Result<Durable> r = s->load();
      CPPUNIT_ASSERT(!r.isOk());
      CPPUNIT_ASSERT_MESSAGE(r.status().message(),
                             r.status().message().find("cannot decrypt") != std::string::npos);
    }
    RaftStorageOptions shortKey;
    shortKey.dataKey = "short";
    CPPUNIT_ASSERT(!RaftStorage::open(dir.file("other"), shortKey).isOk());
  }

  void testCrc32cMatchesTheCastagnoliCheckValues() {
    CPPUNIT_ASSERT_EQUAL(0xE3069283u, crc32c("123456789"));
    CPPUNIT_ASSERT_EQUAL(0u, crc32c(""));
    CPPUNIT_ASSERT_EQUAL(0x8A9136AAu, crc32c(std::string(32, '\0')));    // RFC 3720 B.4
    CPPUNIT_ASSERT_EQUAL(0x62A8AB43u, crc32c(std::string(32, '\xff')));  // RFC 3720 B.4
    CPPUNIT_ASSERT_EQUAL(crc32c("123456789"), crc32c("6789", crc32c("12345")));
    // The instruction-based path agrees with the table on every length and alignment.
    std::string data;
    for (int i = 0; i < 300; ++i) data.push_back(static_cast<char>(i * 37 + 11));
    for (std::size_t from = 0; from < 9; ++from) {
      for (std::size_t len = 0; from + len <= data.size(); len += 7) {
        std::string_view piece(data.data() + from, len);
        CPPUNIT_ASSERT_EQUAL(shoal::raft::crc32cPortable(piece), crc32c(piece));
        CPPUNIT_ASSERT_EQUAL(shoal::raft::crc32cPortable(piece, 0x1234u), crc32c(piece, 0x1234u));
      }
    }
  }

  void testNewDirectoryLoadsEmpty() {
    TempDir t;
    std::string dir = t.file("data/raft");  // parents are created too
    Durable d = loadOk(*openOk(dir));
    CPPUNIT_ASSERT(d.hardState == HardState{});
    CPPUNIT_ASSERT(!d.snapshot);
    CPPUNIT_ASSERT(d.entries.empty());
    CPPUNIT_ASSERT(fs::exists(dir + "/CURRENT"));
    // And again after reopening the (still empty) log.
    d = loadOk(*openOk(dir));
    CPPUNIT_ASSERT(d.entries.empty() && !d.snapshot);
  }

  void testHardStateEntriesAndSnapshotSurviveReopen() {
    TempDir t;
    Durable want;
    want.hardState = hardState(3, 2, 12);
    want.snapshot = snapshot(10, 2, std::string("snap\0\xff\x01", 7));
    want.snapshot->learners = {7, 9};
    want.entries = {entry(11, 2, ""), entry(12, 3, std::string("a\0b", 3)),
                    entry(13, 3, std::string(100000, 'x'))};
    want.entries[2].type = shoal::raft::EntryType::kConfChange;
    {
      auto s = openOk(t.path());
      saveOk(*s, want.hardState, want.entries, want.snapshot);
      CPPUNIT_ASSERT(sameDurable(want, loadOk(*s)));
    }
    auto s = openOk(t.path());
    CPPUNIT_ASSERT(sameDurable(want, loadOk(*s)));
    // Appending after the reopen continues the same log.
    saveOk(*s, std::nullopt, {entry(14, 3, "more")});
    want.entries.push_back(entry(14, 3, "more"));
    s.reset();
    CPPUNIT_ASSERT(sameDurable(want, loadOk(*openOk(t.path()))));
  }

  void testOnDiskFormatIsAsDocumented() {
    TempDir t;
    saveOk(*openOk(t.path()), hardState(1, 1, 1), {entry(1, 1, "payload")});
    auto db = rawDb(t.path());
    CPPUNIT_ASSERT_EQUAL(std::string("shoal-raft 1"), rawGet(*db, "M"));
    std::string key = entryKey(1);
    std::string v = rawGet(*db, key);
    CPPUNIT_ASSERT_EQUAL(char(1), v[0]);  // record version
    std::string payload = v.substr(5);
    uint32_t stored = 0;
    for (int i = 3; i >= 0; --i) stored = (stored << 8) | uint8_t(v[1 + i]);
    CPPUNIT_ASSERT_EQUAL(crc32c(payload, crc32c(std::string(1, '\1'), crc32c(key))), stored);
    // term, index (u64 little-endian), type, data
    CPPUNIT_ASSERT_EQUAL(std::string("\1\0\0\0\0\0\0\0\1\0\0\0\0\0\0\0\0payload", 24), payload);
    CPPUNIT_ASSERT_EQUAL(std::size_t(5 + 24), rawGet(*db, "H").size());
  }

  void testConflictingEntriesTruncateTheLog() {
    TempDir t;
    {
      auto s = openOk(t.path());
      saveOk(*s, hardState(1, 1, 5), entries(1, 10, 1));
      // A new leader at term 2 overwrites from 6: 7..10 of the old term must go.
      saveOk(*s, hardState(2, 0, 5), {entry(6, 2, "new6"), entry(7, 2, "new7")});
    }
    Durable d = loadOk(*openOk(t.path()));
    CPPUNIT_ASSERT_EQUAL(std::size_t(7), d.entries.size());
    CPPUNIT_ASSERT(d.entries[4] == entry(5, 1, "cmd-5"));
    CPPUNIT_ASSERT(d.entries[5] == entry(6, 2, "new6"));
    CPPUNIT_ASSERT(d.entries[6] == entry(7, 2, "new7"));
    auto db = rawDb(t.path());
    std::string v;
    CPPUNIT_ASSERT(db->Get(leveldb::ReadOptions(), entryKey(8), &v).IsNotFound());
    CPPUNIT_ASSERT(db->Get(leveldb::ReadOptions(), entryKey(10), &v).IsNotFound());
  }

  void testSnapshotReplacesTheEntriesItCovers() {
    TempDir t;
    auto s = openOk(t.path());
    std::vector<Entry> log = entries(1, 5, 1);
    for (const Entry& e : entries(6, 10, 2)) log.push_back(e);
    saveOk(*s, hardState(2, 1, 10), log);

    // Within the log and agreeing with it: entries after the snapshot stay.
    saveOk(*s, std::nullopt, {}, snapshot(7, 2, "s7"));
    Durable d = loadOk(*s);
    CPPUNIT_ASSERT(d.snapshot && d.snapshot->index == 7 && d.snapshot->data == "s7");
    CPPUNIT_ASSERT_EQUAL(std::size_t(3), d.entries.size());
    CPPUNIT_ASSERT_EQUAL(Index(8), d.entries.front().index);

    // Beyond the log: everything goes, and the log continues after the snapshot.
    saveOk(*s, hardState(3, 2, 15), {}, snapshot(15, 3, "s15"));
    d = loadOk(*s);
    CPPUNIT_ASSERT(d.snapshot && d.snapshot->index == 15 && d.snapshot->term == 3);
    CPPUNIT_ASSERT(d.entries.empty());
    // A snapshot and entries in one Ready.
    saveOk(*s, hardState(3, 2, 16), {entry(17, 3), entry(18, 3)}, snapshot(16, 3, "s16"));
    s.reset();
    d = loadOk(*openOk(t.path()));
    CPPUNIT_ASSERT(d.snapshot && d.snapshot->index == 16 && d.snapshot->data == "s16");
    CPPUNIT_ASSERT_EQUAL(std::size_t(2), d.entries.size());
    CPPUNIT_ASSERT_EQUAL(Index(17), d.entries.front().index);
    auto db = rawDb(t.path());
    std::string v;
    for (Index i = 1; i <= 16; ++i)
      CPPUNIT_ASSERT(db->Get(leveldb::ReadOptions(), entryKey(i), &v).IsNotFound());
  }

  void testSnapshotThatDisagreesWithTheLogDiscardsIt() {
    TempDir t;
    auto s = openOk(t.path());
    saveOk(*s, hardState(2, 1, 3), entries(1, 10, 2));
    // The leader's snapshot says entry 6 has term 3: our 6..10 are from another history.
    saveOk(*s, hardState(3, 0, 6), {}, snapshot(6, 3));
    Durable d = loadOk(*s);
    CPPUNIT_ASSERT(d.snapshot && d.snapshot->index == 6);
    CPPUNIT_ASSERT(d.entries.empty());
    saveOk(*s, std::nullopt, {entry(7, 3)});
    s.reset();
    d = loadOk(*openOk(t.path()));
    CPPUNIT_ASSERT(d.snapshot && d.snapshot->index == 6 && d.snapshot->term == 3);
    CPPUNIT_ASSERT_EQUAL(std::size_t(1), d.entries.size());
    CPPUNIT_ASSERT(d.entries[0] == entry(7, 3));
  }

  void testCompactDeletesCoveredEntriesAndKeepsTheRest() {
    TempDir t;
    {
      auto s = openOk(t.path());
      saveOk(*s, hardState(2, 1, 8), entries(1, 10, 2));
      Status st = s->compact(5, snapshot(5, 2, "up to 5"));
      CPPUNIT_ASSERT_MESSAGE(st.toString(), st.isOk());
      st = s->compact(8, snapshot(8, 2, "up to 8"));
      CPPUNIT_ASSERT_MESSAGE(st.toString(), st.isOk());
      saveOk(*s, std::nullopt, {entry(11, 2)});
    }
    Durable d = loadOk(*openOk(t.path()));
    CPPUNIT_ASSERT(d.snapshot && d.snapshot->index == 8 && d.snapshot->data == "up to 8");
    CPPUNIT_ASSERT_EQUAL(std::size_t(3), d.entries.size());
    CPPUNIT_ASSERT_EQUAL(Index(9), d.entries.front().index);
    CPPUNIT_ASSERT_EQUAL(Index(11), d.entries.back().index);
    auto db = rawDb(t.path());
    std::string v;
    for (Index i = 1; i <= 8; ++i)
      CPPUNIT_ASSERT(db->Get(leveldb::ReadOptions(), entryKey(i), &v).IsNotFound());
  }

  void testCompactRefusesWhatTheLogCannotBack() {
    TempDir t;
    auto s = openOk(t.path());
    std::vector<Entry> log = entries(1, 5, 1);
    for (const Entry& e : entries(6, 10, 2)) log.push_back(e);
    saveOk(*s, hardState(2, 1, 8), log);
    CPPUNIT_ASSERT(s->compact(9, snapshot(9, 2)).code() == Status::Code::kFailedPrecondition);
    assertContains(s->compact(9, snapshot(9, 2)).message(), "commit");
    CPPUNIT_ASSERT(s->compact(5, snapshot(5, 2)).code() == Status::Code::kFailedPrecondition);
    CPPUNIT_ASSERT(s->compact(5, snapshot(6, 2)).code() == Status::Code::kInvalidArgument);
    CPPUNIT_ASSERT(s->compact(6, snapshot(6, 2)).isOk());
    CPPUNIT_ASSERT(s->compact(4, snapshot(4, 1)).code() == Status::Code::kFailedPrecondition);
    Durable d = loadOk(*s);
    CPPUNIT_ASSERT(d.snapshot && d.snapshot->index == 6);
    CPPUNIT_ASSERT_EQUAL(std::size_t(4), d.entries.size());
  }

  void testSaveRefusesAStateLoadWouldReject() {
    TempDir t;
    auto s = openOk(t.path());
    saveOk(*s, hardState(2, 1, 3), entries(1, 5, 2));
    auto code = [](const Status& st) { return st.code(); };
    using C = Status::Code;
    // A gap after the log.
    CPPUNIT_ASSERT(code(s->save(std::nullopt, {entry(7, 2)}, std::nullopt)) ==
                   C::kFailedPrecondition);
    // Commit beyond the log.
    CPPUNIT_ASSERT(code(s->save(hardState(2, 1, 9), {}, std::nullopt)) == C::kFailedPrecondition);
    // A term lower than the previous entry's.
    CPPUNIT_ASSERT(code(s->save(std::nullopt, {entry(6, 1)}, std::nullopt)) ==
                   C::kFailedPrecondition);
    // An entry from a term the hard state has not reached.
    CPPUNIT_ASSERT(code(s->save(std::nullopt, {entry(6, 3)}, std::nullopt)) ==
                   C::kFailedPrecondition);
    // Malformed arguments.
    CPPUNIT_ASSERT(code(s->save(std::nullopt, {entry(6, 2), entry(8, 2)}, std::nullopt)) ==
                   C::kInvalidArgument);
    CPPUNIT_ASSERT(code(s->save(std::nullopt, {entry(6, 0)}, std::nullopt)) == C::kInvalidArgument);
    CPPUNIT_ASSERT(code(s->save(std::nullopt, {}, Snapshot{})) == C::kInvalidArgument);
    // An older snapshot than the stored one; entries the snapshot already covers.
    saveOk(*s, std::nullopt, {}, snapshot(4, 2));
    CPPUNIT_ASSERT(code(s->save(std::nullopt, {}, snapshot(3, 2))) == C::kFailedPrecondition);
    CPPUNIT_ASSERT(code(s->save(std::nullopt, {entry(4, 2)}, std::nullopt)) ==
                   C::kFailedPrecondition);
    // None of it reached the disk.
    s.reset();
    Durable d = loadOk(*openOk(t.path()));
    CPPUNIT_ASSERT(d.hardState == hardState(2, 1, 3));
    CPPUNIT_ASSERT(d.snapshot && d.snapshot->index == 4);
    CPPUNIT_ASSERT_EQUAL(std::size_t(1), d.entries.size());
    CPPUNIT_ASSERT(d.entries[0] == entry(5, 2, "cmd-5"));
  }

  void testFlippedBytesInAValueAreDetectedNamingTheRecord() {
    TempDir t;
    saveOk(*openOk(t.path()), hardState(1, 1, 10), entries(2, 10, 1), snapshot(1, 1));
    struct Case {
      std::string key;
      std::string name;
    };
    for (const Case& c :
         {Case{entryKey(7), "entry 7"}, Case{"H", "hard state"}, Case{"S", "snapshot"}}) {
      std::string good;
      {
        auto db = rawDb(t.path());
        good = rawGet(*db, c.key);
        std::string bad = good;
        bad[bad.size() - 1] ^= 0x10;  // inside the payload, framing intact
        rawPut(*db, c.key, bad);
      }
      {
        auto s = openOk(t.path());
        Result<Durable> d = s->load();
        CPPUNIT_ASSERT(!d.isOk());
        CPPUNIT_ASSERT(d.status().code() == Status::Code::kInternal);
        assertContains(d.status().message(), "raft log corrupt: " + c.name);
        assertContains(d.status().message(), "checksum mismatch");
        // Writes refuse to build on a log that does not check out.
        CPPUNIT_ASSERT(!s->save(std::nullopt, {entry(11, 1)}, std::nullopt).isOk());
      }
      rawPut(*rawDb(t.path()), c.key, good);
      CPPUNIT_ASSERT(openAndLoad(t.path()).isOk());
    }
    // A value cut short.
    rawPut(*rawDb(t.path()), entryKey(9), "\1ab");
    assertContains(openAndLoad(t.path()).message(), "entry 9: record too short");
    // A record version this build does not know.
    std::string v = rawGet(*rawDb(t.path()), entryKey(8));
    v[0] = 7;
    rawPut(*rawDb(t.path()), entryKey(8), v);
    assertContains(openAndLoad(t.path()).message(), "entry 8: unknown record version 7");
  }

  void testValueUnderTheWrongKeyIsDetected() {
    TempDir t;
    saveOk(*openOk(t.path()), hardState(1, 1, 0), entries(1, 10, 1));
    {
      auto db = rawDb(t.path());
      rawPut(*db, entryKey(7), rawGet(*db, entryKey(8)));
    }
    Status st = openAndLoad(t.path());
    assertContains(st.message(), "entry 7: checksum mismatch");
  }

  void testMissingEntryIsDetected() {
    TempDir t;
    saveOk(*openOk(t.path()), hardState(1, 1, 0), entries(1, 20, 1));
    rawDelete(*rawDb(t.path()), entryKey(12));
    assertContains(openAndLoad(t.path()).message(), "raft log corrupt: missing entry 12");

    TempDir t2;
    saveOk(*openOk(t2.path()), hardState(1, 1, 0), entries(6, 9, 1), snapshot(5, 1));
    rawDelete(*rawDb(t2.path()), entryKey(6));
    assertContains(openAndLoad(t2.path()).message(),
                   "missing entry 6 (the log must start right after the snapshot at 5)");
  }

  void testTermGoingDownIsDetected() {
    // A well-framed record of entry 17 at term 3, taken from another log, placed after an
    // entry 16 of term 4.
    TempDir a, b;
    std::vector<Entry> logA = entries(1, 15, 1);
    for (const Entry& e : entries(16, 20, 4)) logA.push_back(e);
    saveOk(*openOk(a.path()), hardState(4, 1, 0), logA);
    std::vector<Entry> logB = entries(1, 16, 1);
    logB.push_back(entry(17, 3));
    saveOk(*openOk(b.path()), hardState(3, 1, 0), logB);
    std::string e17 = rawGet(*rawDb(b.path()), entryKey(17));
    rawPut(*rawDb(a.path()), entryKey(17), e17);
    Status st = openAndLoad(a.path());
    assertContains(st.message(), "raft log corrupt: entry 17 has term 3 < previous term 4");
  }

  void testCommitBeyondTheLogIsDetected() {
    TempDir t;
    saveOk(*openOk(t.path()), hardState(1, 1, 40), entries(1, 40, 1));
    {
      auto db = rawDb(t.path());
      rawDelete(*db, entryKey(39));
      rawDelete(*db, entryKey(40));
    }
    assertContains(openAndLoad(t.path()).message(),
                   "raft log corrupt: hard state commit 40 beyond last entry 38");
  }

  void testUnknownKeyIsDetected() {
    TempDir t;
    saveOk(*openOk(t.path()), hardState(1, 1, 0), entries(1, 3, 1));
    rawPut(*rawDb(t.path()), "Zebra", "x");
    assertContains(openAndLoad(t.path()).message(), "unexpected key 'Zebra'");
  }

  void testUnknownFormatVersionIsRefused() {
    TempDir t;
    saveOk(*openOk(t.path()), hardState(1, 1, 0), entries(1, 3, 1));
    rawPut(*rawDb(t.path()), "M", "shoal-raft 2");
    Result<std::unique_ptr<RaftStorage>> r = RaftStorage::open(t.path());
    CPPUNIT_ASSERT(!r.isOk());
    CPPUNIT_ASSERT(r.status().code() == Status::Code::kNotSupported);
    assertContains(r.status().message(), "format version 2; this build reads version 1 only");
    // The marker is left as it was: refusing does not rewrite it.
    CPPUNIT_ASSERT_EQUAL(std::string("shoal-raft 2"), rawGet(*rawDb(t.path()), "M"));

    rawPut(*rawDb(t.path()), "M", "shoal-raft v1");
    r = RaftStorage::open(t.path());
    CPPUNIT_ASSERT(r.status().code() == Status::Code::kFailedPrecondition);
    assertContains(r.status().message(), "unknown format marker 'shoal-raft v1'");
  }

  void testForeignDatabaseIsRefused() {
    TempDir t;
    rawPut(*rawDb(t.path(), true), "some", "thing");
    Result<std::unique_ptr<RaftStorage>> r = RaftStorage::open(t.path());
    CPPUNIT_ASSERT(r.status().code() == Status::Code::kFailedPrecondition);
    assertContains(r.status().message(), "holds data but no format marker");
  }

  void testDirectoryWithOtherFilesIsRefused() {
    TempDir t;
    t.write("notes.txt", "not a database");
    Result<std::unique_ptr<RaftStorage>> r = RaftStorage::open(t.path());
    CPPUNIT_ASSERT(!r.isOk());
    CPPUNIT_ASSERT(r.status().code() == Status::Code::kFailedPrecondition);
    assertContains(r.status().message(), "no LevelDB database");
    CPPUNIT_ASSERT(!fs::exists(t.file("CURRENT")));
    CPPUNIT_ASSERT_EQUAL(std::string("not a database"), shoal::test::readFile(t.file("notes.txt")));

    // A database that lost its CURRENT file is not silently replaced by an empty one.
    TempDir t2;
    saveOk(*openOk(t2.path()), hardState(5, 2, 3), entries(1, 3, 5));
    fs::remove(t2.file("CURRENT"));
    r = RaftStorage::open(t2.path());
    CPPUNIT_ASSERT(r.status().code() == Status::Code::kFailedPrecondition);
    assertContains(r.status().message(), "no CURRENT file");
  }

  void testLeftoversOfAnInterruptedCreationAreFine() {
    TempDir t;
    t.write("LOCK", "");
    t.write("LOG", "leveldb info log\n");
    Durable d = loadOk(*openOk(t.path()));
    CPPUNIT_ASSERT(d.entries.empty());
  }

  void testJunkCurrentFileFailsCleanly() {
    TempDir t;
    saveOk(*openOk(t.path()), hardState(1, 1, 0), entries(1, 3, 1));
    for (const std::string& junk :
         std::vector<std::string>{"junk", "MANIFEST-999999\n", std::string("\0\xff\n", 3)}) {
      t.write("CURRENT", junk);
      Status st = openAndLoad(t.path());
      CPPUNIT_ASSERT(!st.isOk());
      CPPUNIT_ASSERT(st.code() == Status::Code::kInternal);
      assertContains(st.message(), "cannot open the LevelDB database");
    }
  }

  void testTruncatedTableFileFailsCleanly() {
    TempDir t;
    saveOk(*openOk(t.path()), hardState(1, 1, 0), entries(1, 2000, 1));
    {
      auto db = rawDb(t.path());
      db->CompactRange(nullptr, nullptr);  // everything into .ldb tables
    }
    std::string table = newestFile(t.path(), ".ldb");
    fs::resize_file(table, fs::file_size(table) / 2);
    Status st = openAndLoad(t.path());
    CPPUNIT_ASSERT(!st.isOk());
    CPPUNIT_ASSERT(st.code() == Status::Code::kInternal);
    CPPUNIT_ASSERT(!st.message().empty());

    // Garbage in place of a table (same size, so only checksums can tell).
    TempDir t2;
    saveOk(*openOk(t2.path()), hardState(1, 1, 0), entries(1, 2000, 1));
    rawDb(t2.path())->CompactRange(nullptr, nullptr);
    table = newestFile(t2.path(), ".ldb");
    std::string bytes = shoal::test::readFile(table);
    for (std::size_t i = 0; i < bytes.size(); i += 97) bytes[i] = static_cast<char>(bytes[i] + 1);
    std::ofstream(table, std::ios::binary | std::ios::trunc) << bytes;
    st = openAndLoad(t2.path());
    CPPUNIT_ASSERT(!st.isOk());
    CPPUNIT_ASSERT(st.code() == Status::Code::kInternal);
  }

  void testDamagedWriteAheadLogFailsCleanly() {
    TempDir t;
    saveOk(*openOk(t.path()), hardState(1, 1, 0), entries(1, 200, 1));
    // Closing leaves the data in the write-ahead log; flip bytes in its middle.
    std::string log = newestFile(t.path(), ".log");
    std::string bytes = shoal::test::readFile(log);
    CPPUNIT_ASSERT(bytes.size() > 1000);
    for (std::size_t i = bytes.size() / 2; i < bytes.size() / 2 + 8; ++i) bytes[i] ^= 0x5a;
    std::ofstream(log, std::ios::binary | std::ios::trunc) << bytes;
    Status st = openAndLoad(t.path());
    CPPUNIT_ASSERT(!st.isOk());
    CPPUNIT_ASSERT(st.code() == Status::Code::kInternal);
    assertContains(st.message(), "Corruption");
  }

  void testTornLogTailGivesAnEarlierSavedState() {
    // Saves of growing states; then the write-ahead log is cut at many points (a crash in the
    // middle of a write). Each cut must give back exactly one of the saved states (the batch
    // is atomic) or fail cleanly; never a mixture.
    TempDir t;
    std::string dir = t.file("db");
    std::vector<Durable> states(1);  // the empty log first
    {
      auto s = openOk(dir);
      for (Index i = 1; i <= 30; ++i) {
        Durable next = states.back();
        next.hardState = hardState(1 + i / 10, 1, i - 1);
        next.entries.push_back(entry(i, 1 + i / 10, std::string(50 + i, 'a' + i % 26)));
        saveOk(*s, next.hardState, {next.entries.back()});
        states.push_back(next);
      }
    }
    std::string log = newestFile(dir, ".log");
    std::uintmax_t size = fs::file_size(log);
    int recovered = 0;
    for (std::uintmax_t cut = 0; cut < size; cut += std::max<std::uintmax_t>(1, size / 37)) {
      TempDir copy;
      fs::copy(dir, copy.path(),
               fs::copy_options::recursive | fs::copy_options::overwrite_existing);
      fs::resize_file(copy.path() + "/" + fs::path(log).filename().string(), cut);
      Result<std::unique_ptr<RaftStorage>> r = RaftStorage::open(copy.path());
      if (!r) continue;
      Result<Durable> d = (*r)->load();
      if (!d) continue;
      bool known = std::any_of(states.begin(), states.end(),
                               [&](const Durable& s) { return sameDurable(s, *d); });
      CPPUNIT_ASSERT_MESSAGE("cut at " + std::to_string(cut) + " gave a state never saved", known);
      ++recovered;
    }
    CPPUNIT_ASSERT(recovered > 0);
  }

  void testSecondOpenOfTheSameDirectoryFails() {
    TempDir t;
    auto s = openOk(t.path());
    Result<std::unique_ptr<RaftStorage>> r = RaftStorage::open(t.path());
    CPPUNIT_ASSERT(!r.isOk());
    assertContains(r.status().message(), "cannot open the LevelDB database");
    CPPUNIT_ASSERT(loadOk(*s).entries.empty());
  }

  void testEveryPromiseIsSynced() {
    TempDir t;
    SyncCountingEnv env;
    RaftStorageOptions o;
    o.env = &env;
    auto s = openOk(t.path(), o);
    int before = env.logSyncs;
    saveOk(*s, hardState(1, 1, 0), entries(1, 5, 1));
    CPPUNIT_ASSERT_EQUAL(before + 1, env.logSyncs.load());
    // Only the commit index moves: written, not synced (it promises nothing to peers).
    saveOk(*s, hardState(1, 1, 5), {});
    CPPUNIT_ASSERT_EQUAL(before + 1, env.logSyncs.load());
    CPPUNIT_ASSERT_EQUAL(uint64_t{5}, loadOk(*s).hardState.commit);
    // A vote or a term is a promise: synced.
    saveOk(*s, hardState(2, 0, 5), {});
    CPPUNIT_ASSERT_EQUAL(before + 2, env.logSyncs.load());
    saveOk(*s, hardState(2, 3, 5), {});
    CPPUNIT_ASSERT_EQUAL(before + 3, env.logSyncs.load());
    CPPUNIT_ASSERT(s->compact(3, snapshot(3, 1)).isOk());
    CPPUNIT_ASSERT_EQUAL(before + 4, env.logSyncs.load());
    saveOk(*s, hardState(2, 3, 9), {}, snapshot(9, 2));
    CPPUNIT_ASSERT_EQUAL(before + 5, env.logSyncs.load());
    saveOk(*s, std::nullopt, {entry(10, 2)});  // entries: synced
    CPPUNIT_ASSERT_EQUAL(before + 6, env.logSyncs.load());
    saveOk(*s, std::nullopt, {});  // nothing to write: no disk access at all
    CPPUNIT_ASSERT_EQUAL(before + 6, env.logSyncs.load());
  }

  void testFailedSyncStopsFurtherWrites() {
    TempDir t;
    SyncCountingEnv env;
    RaftStorageOptions o;
    o.env = &env;
    auto s = openOk(t.path(), o);
    saveOk(*s, hardState(1, 1, 0), entries(1, 5, 1));
    env.failSyncs = true;
    Status st = s->save(hardState(1, 1, 2), {entry(6, 1)}, std::nullopt);
    CPPUNIT_ASSERT(!st.isOk());
    assertContains(st.message(), "a write failed");
    env.failSyncs = false;
    st = s->save(hardState(1, 1, 3), {}, std::nullopt);
    assertContains(st.message(), "a write failed");
    CPPUNIT_ASSERT(!s->compact(1, snapshot(1, 1)).isOk());
  }

  void testSavedStateSurvivesProcessDeath() {
    TempDir t;
    std::vector<Entry> log = entries(1, 50, 2);
    pid_t pid = fork();
    CPPUNIT_ASSERT(pid >= 0);
    if (pid == 0) {
      // The child saves and dies at once: no destructor, no close of the database.
      Result<std::unique_ptr<RaftStorage>> r = RaftStorage::open(t.path());
      if (!r) _exit(2);
      if (!(*r)->save(hardState(2, 3, 40), log, std::nullopt).isOk()) _exit(3);
      if (!(*r)->compact(10, snapshot(10, 2, "at 10")).isOk()) _exit(4);
      _exit(0);
    }
    int status = 0;
    CPPUNIT_ASSERT_EQUAL(pid, waitpid(pid, &status, 0));
    CPPUNIT_ASSERT(WIFEXITED(status));
    CPPUNIT_ASSERT_EQUAL(0, WEXITSTATUS(status));
    Durable d = loadOk(*openOk(t.path()));
    CPPUNIT_ASSERT(d.hardState == hardState(2, 3, 40));
    CPPUNIT_ASSERT(d.snapshot && d.snapshot->index == 10 && d.snapshot->data == "at 10");
    CPPUNIT_ASSERT(std::vector<Entry>(log.begin() + 10, log.end()) == d.entries);
  }

  void testRunsOnAnInMemoryEnv() {
    std::unique_ptr<leveldb::Env> mem(leveldb::NewMemEnv(leveldb::Env::Default()));
    RaftStorageOptions o;
    o.env = mem.get();
    {
      auto s = openOk("/sim/node1/raft", o);
      saveOk(*s, hardState(1, 1, 2), entries(1, 3, 1));
    }
    Durable d = loadOk(*openOk("/sim/node1/raft", o));
    CPPUNIT_ASSERT_EQUAL(std::size_t(3), d.entries.size());
    CPPUNIT_ASSERT(!fs::exists("/sim/node1/raft"));
  }
};

CPPUNIT_TEST_SUITE_REGISTRATION(RaftStorageTest);
