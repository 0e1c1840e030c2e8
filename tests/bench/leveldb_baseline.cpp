#include "tests/bench/leveldb_baseline.h"

#include <leveldb/db.h>

#include <chrono>
#include <memory>
#include <string>

#include "tests/support/temp_dir.h"

namespace shoal::bench {

double syncedLevelDbWritesPerSecond(double seconds) {
  shoal::test::TempDir dir;
  leveldb::DB* raw = nullptr;
  leveldb::Options opts;
  opts.create_if_missing = true;
  if (!leveldb::DB::Open(opts, dir.file("db"), &raw).ok()) return 0;
  std::unique_ptr<leveldb::DB> db(raw);
  leveldb::WriteOptions w;
  w.sync = true;
  std::string value(200, 'x');
  long n = 0;
  auto start = std::chrono::steady_clock::now();
  auto end = start + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < end) db->Put(w, "k" + std::to_string(n++), value);
  return n / std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace shoal::bench
