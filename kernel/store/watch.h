#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>

#include "kernel/common/status.h"
#include "kernel/store/event.h"
#include "kernel/store/watch_hub.h"

namespace shoal::store {

// A subscription to committed changes of chosen kinds, delivered in commit order, made by
// MemoryStore::watch or viewAndWatch. Errors from next*/nextBatch:
//  - timeout: nothing new within the timeout; call again;
//  - resource exhausted: the watch fell behind (its queue limit, or the history moved past
//    it) and is cut off; the message and resumeVersion() say where to resume;
//  - failed precondition: the store was replaced by a snapshot; re-read it;
//  - cancelled: cancel() was called, or the store was closed.
// After any error but timeout, the watch is finished and delivers nothing more.
// OWNERSHIP: the caller owns the handle; destroying it cancels the watch. It may outlive the
// store. THREAD: one consumer thread calls next/nextBatch; cancel() may be called from any
// thread and wakes a blocked consumer.
class Watch {
 public:
  Watch(std::shared_ptr<WatchHub> hub, std::shared_ptr<WatchHub::Cursor> cursor);
  ~Watch();
  Watch(const Watch&) = delete;
  Watch& operator=(const Watch&) = delete;

  // The matching events of the next committed changeset.
  Result<EventBatch> nextBatch(std::chrono::milliseconds timeout);
  // One event at a time (a batch is buffered and handed out in order first).
  Result<Event> next(std::chrono::milliseconds timeout);
  void cancel();

  // Every change up to this version has been delivered (or did not match the kinds): the
  // version to resume from after an error. While a batch is only partly handed out by next(),
  // it is the version before that batch.
  uint64_t resumeVersion() const;

 private:
  std::shared_ptr<WatchHub> hub_;
  std::shared_ptr<WatchHub::Cursor> cursor_;
  std::deque<Event> pending_;  // consumer thread only
  uint64_t pendingVersion_ = 0;
};

}  // namespace shoal::store
