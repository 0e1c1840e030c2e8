#pragma once

#include <array>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <vector>

#include "kernel/common/status.h"
#include "kernel/store/event.h"
#include "kernel/store/kind.h"

namespace shoal::store {

// The bounded history of committed changesets and the watches reading it. Every watch is a
// cursor into the one shared history, so publishing costs the same however many watches
// there are, nothing is copied per watch, and replaying "from version V" is only where the
// cursor starts. A watch that falls more than its limit of (matching) events behind, or whose
// cursor would be trimmed away, is cut off with the version to resume from: publish() never
// waits for a reader and never drops an event a watch would silently miss.
//
// Shared (shared_ptr) by the store and its Watch handles, so either may go first.
// THREAD: all members are safe from any thread; mu_ is never held while calling out.
class WatchHub {
 public:
  // One watch's cursor. Fields guarded by WatchHub::mu_.
  struct Cursor {
    KindSet kinds;
    std::size_t limit = 0;  // most matching events it may fall behind
    uint64_t nextSeq = 0;   // the history entry to read next
    uint64_t position = 0;  // every change up to this version has been handed out
    bool done = false;      // cancelled, cut off or closed; `error` says which
    Status error;
  };

  WatchHub(std::size_t maxChangeSets, std::size_t maxEvents, uint64_t floor);

  // Appends one committed changeset (non-empty `events`, `version` above every earlier one)
  // and wakes the watches. Called by the store with its write lock held.
  void publish(uint64_t version, std::vector<Event> events);

  // A cursor that will see every event with a version above `fromVersion`. Fails when the
  // history no longer reaches back that far; `current` is the store's version, for the
  // message telling the caller where to resume after re-reading the store.
  Result<std::shared_ptr<Cursor>> subscribe(KindSet kinds, uint64_t fromVersion, std::size_t limit,
                                            uint64_t current);

  // The next batch of matching events for `cursor`, waiting up to `timeout`. Errors: timeout
  // (nothing yet; call again), or the cursor's terminal error.
  Result<EventBatch> next(Cursor& cursor, std::chrono::milliseconds timeout);
  void cancel(Cursor& cursor);
  uint64_t position(const Cursor& cursor) const;

  // Drops the history and cuts off every watch (the store was replaced by a snapshot).
  void reset(uint64_t floor);
  // Ends every watch (the store is going away); later subscribes fail.
  void close();

  uint64_t floor() const;  // the oldest version a watch may start from

 private:
  struct Entry {
    uint64_t version;
    uint32_t kinds;                           // KindSet bits of its events
    std::array<uint64_t, kKindCount> before;  // events per kind published before it
    std::vector<Event> events;
  };

  void finish(Cursor& cursor, Status error);  // mu_ held
  uint64_t lag(const Cursor& cursor) const;   // mu_ held

  const std::size_t maxChangeSets_;
  const std::size_t maxEvents_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Entry> entries_;                     // guarded by mu_
  uint64_t firstSeq_ = 0;                         // guarded by mu_: seq of entries_.front()
  uint64_t floor_ = 0;                            // guarded by mu_
  std::size_t eventsHeld_ = 0;                    // guarded by mu_
  std::array<uint64_t, kKindCount> published_{};  // guarded by mu_: events per kind, ever
  std::vector<std::shared_ptr<Cursor>> cursors_;  // guarded by mu_: live watches
  std::size_t waiting_ = 0;                       // guarded by mu_: consumers in wait
  bool closed_ = false;                           // guarded by mu_
};

}  // namespace shoal::store
