#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kernel/common/status.h"
#include "kernel/raft/raft_types.h"

namespace leveldb {
class DB;
class Env;
class WriteBatch;
}  // namespace leveldb

namespace shoal::raft {

// A member's durable Raft state, as RaftStorage::load() finds it on disk.
struct Durable {
  HardState hardState;               // all zero when none was ever saved
  std::optional<Snapshot> snapshot;  // the latest snapshot, if any (never an empty one)
  // Contiguous, starting right after snapshot->index (or at 1 without a snapshot); terms never
  // decrease, and none is above hardState.term.
  std::vector<Entry> entries;
};

struct RaftStorageOptions {
  // The file system LevelDB goes through. BORROWED: must outlive the storage. nullptr means
  // leveldb::Env::Default(), the real disk. Tests count syncs and inject failures through it;
  // a simulation can hand in an in-memory Env (leveldb::NewMemEnv).
  leveldb::Env* env = nullptr;
  // The data key (32 bytes) that seals every record written from now on (AES-256-GCM; record
  // version 2); empty: records are written as they are (version 1). Plain records already on
  // disk still read; sealed ones need the key they were written with.
  std::string dataKey;
};

// The durable side of a Raft member: hard state, log and latest snapshot in a LevelDB database
// of its own (one directory, e.g. <data_root>/raft). The on-disk format and the fsync
// discipline are described in kernel/raft/README.md ("Storage").
//
// Every write (save, compact) is ONE LevelDB write batch written with sync = true: when it
// returns ok, the whole batch is on stable storage, and after a crash either all of it or none
// of it is there. This is what lets the owner send a Ready's messages after save() returns.
//
// Every read verifies LevelDB's block checksums and each record's own CRC32C, and load()
// checks the log's shape; damage is reported as a Status naming what is wrong, never an abort
// and never a silently different state.
//
// ERRORS: kInternal for corruption and I/O failures, kNotSupported for a format version this
// build does not know, kFailedPrecondition for a directory that is not a Shoal Raft log or a
// write that would leave a log load() rejects, kInvalidArgument for malformed arguments.
// After a failed write the storage refuses every further write (whether the batch reached the
// disk is unknown); the owner must stop and restart from load().
//
// THREAD: not thread-safe; the owner serialises every call. One process at a time: open()
// fails while another handle (in this process or another) holds the directory.
class RaftStorage {
 public:
  // The layout this build reads and writes (keys, record framing, encodings).
  static constexpr int kFormatVersion = 1;

  // Opens the storage in `dir`, creating the directory (and its parents) and an empty log when
  // it is missing or empty. Refuses a directory that holds files but no LevelDB database, a
  // database without Shoal's format marker, and a format version other than kFormatVersion.
  static Result<std::unique_ptr<RaftStorage>> open(const std::string& dir,
                                                   const RaftStorageOptions& options = {});

  ~RaftStorage();
  RaftStorage(const RaftStorage&) = delete;
  RaftStorage& operator=(const RaftStorage&) = delete;

  // Reads and checks everything: what a member restarts from. An empty Durable for a new log.
  Result<Durable> load();

  // Persists one Ready, durably, as one batch:
  // - `snapshot` (a snapshot received from the leader) replaces the stored one and deletes
  //   every entry up to its index; entries after it stay only if the log holds the snapshot's
  //   own entry with the snapshot's term (Raft's InstallSnapshot rule), otherwise the whole
  //   log goes. A snapshot older than the stored one is refused.
  // - `entries` (contiguous, terms not decreasing) are appended with the first one's index as
  //   the truncation point: every stored entry from there on is deleted first (conflict
  //   truncation). They must start within the log (or right after it) and after the snapshot.
  // - `hs` replaces the hard state.
  // The state after the batch must be one load() accepts (commit within the log, no entry term
  // above the hard state's term); otherwise nothing is written (kFailedPrecondition).
  // Nothing to write: returns ok without touching the disk.
  Status save(const std::optional<HardState>& hs, const std::vector<Entry>& entries,
              const std::optional<Snapshot>& snapshot);

  // Stores a snapshot made locally from the state machine and deletes the entries it covers
  // (index <= upTo), keeping the rest of the log; one synced batch. `upTo` must equal
  // snapshot.index (this format keeps no entries at or below the snapshot), be committed, be
  // in the log, and snapshot.term must be the term of entry `upTo`.
  Status compact(Index upTo, const Snapshot& snapshot);

  const std::string& dir() const { return dir_; }

 private:
  // The log's outline, enough to check a write without reading the log again.
  struct Shape {
    HardState hardState;
    Index snapIndex = 0;  // 0: no snapshot
    Term snapTerm = 0;
    Index lastIndex = 0;  // == snapIndex when there are no entries
    Term lastTerm = 0;
  };

  RaftStorage(std::string dir, std::unique_ptr<leveldb::DB> db);

  // Checks the meta record, writing it into a new, empty database.
  Status checkFormatMarker();
  Status checkMarkerValue(std::string_view value) const;
  // Reads and checks everything; on success also learns the shape.
  Result<Durable> scan();
  Status ensureShape();
  // The term of entry `index` of the log as `shape` describes it (read from disk).
  Result<Term> termAt(const Shape& shape, Index index);
  Status corrupt(const std::string& what) const;
  std::string dataKey_;  // empty: records are not sealed
  // Writes `batch` synced; on success the log has the shape `next`.
  Status write(leveldb::WriteBatch& batch, const Shape& next, bool sync = true);

  std::string dir_;
  std::unique_ptr<leveldb::DB> db_;
  std::optional<Shape> shape_;  // known after load() or the first write
  Status failed_;               // set by a failed write: no more writes
};

// CRC32C (Castagnoli, as in iSCSI and ext4) of `data`, continuing from `crc` so that
// crc32c(b, crc32c(a)) == crc32c(a + b). Frames every stored record; exposed for tests.
uint32_t crc32c(std::string_view data, uint32_t crc = 0);
// The same, without the CPU's crc32 instruction (crc32c() uses it when present); for tests.
uint32_t crc32cPortable(std::string_view data, uint32_t crc = 0);

}  // namespace shoal::raft
