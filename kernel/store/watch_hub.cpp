#include "kernel/store/watch_hub.h"

#include <algorithm>

namespace shoal::store {

std::string_view eventTypeName(EventType type) {
  switch (type) {
    case EventType::kCreated:
      return "created";
    case EventType::kUpdated:
      return "updated";
    case EventType::kDeleted:
      return "deleted";
  }
  return "unknown-event";
}

WatchHub::WatchHub(std::size_t maxChangeSets, std::size_t maxEvents, uint64_t floor)
    : maxChangeSets_(std::max<std::size_t>(maxChangeSets, 1)),
      maxEvents_(std::max<std::size_t>(maxEvents, 1)),
      floor_(floor) {}

void WatchHub::finish(Cursor& cursor, Status error) {
  if (cursor.done) return;
  cursor.done = true;
  cursor.error = std::move(error);
}

uint64_t WatchHub::lag(const Cursor& c) const {
  if (c.nextSeq >= firstSeq_ + entries_.size()) return 0;
  const Entry& e = entries_[c.nextSeq - firstSeq_];
  uint64_t n = 0;
  for (Kind k : kAllKinds) {
    if (c.kinds.contains(k)) n += published_[kindIndex(k)] - e.before[kindIndex(k)];
  }
  return n;
}

void WatchHub::publish(uint64_t version, std::vector<Event> events) {
  std::lock_guard lk(mu_);
  if (closed_) return;
  Entry entry{version, 0, published_, std::move(events)};
  for (const Event& ev : entry.events) {
    ++published_[kindIndex(ev.object->kind)];
    entry.kinds |= KindSet::bit(ev.object->kind);
  }
  eventsHeld_ += entry.events.size();
  entries_.push_back(std::move(entry));

  while (entries_.size() > 1 && (entries_.size() > maxChangeSets_ || eventsHeld_ > maxEvents_)) {
    const Entry& old = entries_.front();
    for (auto& c : cursors_) {
      if (c->done || c->nextSeq != firstSeq_) continue;
      if (!c->kinds.intersects(old.kinds) || old.version <= c->position) {
        // Nothing in it for this watch: step over it rather than lose the watch.
        ++c->nextSeq;
        c->position = std::max(c->position, old.version);
      } else {
        finish(*c, Status::resourceExhausted(
                       "watch fell behind and the history no longer holds version " +
                       std::to_string(old.version) +
                       "; re-read the store and resume from version " + std::to_string(version)));
      }
    }
    floor_ = old.version;
    eventsHeld_ -= old.events.size();
    entries_.pop_front();
    ++firstSeq_;
  }

  for (auto& c : cursors_) {
    if (c->done) continue;
    uint64_t behind = lag(*c);
    if (behind > c->limit) {
      finish(*c,
             Status::resourceExhausted("watch fell behind: " + std::to_string(behind) +
                                       " events waiting (limit " + std::to_string(c->limit) +
                                       "); resume from version " + std::to_string(c->position)));
    }
  }
  std::erase_if(cursors_, [](const std::shared_ptr<Cursor>& c) { return c->done; });
  // A broadcast costs a system call even when nobody is waiting for it.
  if (waiting_ > 0) cv_.notify_all();
}

Result<std::shared_ptr<WatchHub::Cursor>> WatchHub::subscribe(KindSet kinds, uint64_t fromVersion,
                                                              std::size_t limit, uint64_t current) {
  if (kinds.empty()) return Status::invalidArgument("a watch needs at least one kind");
  std::lock_guard lk(mu_);
  if (closed_) return Status::cancelled("the store is closed");
  if (fromVersion < floor_) {
    return Status::failedPrecondition(
        "version " + std::to_string(fromVersion) + " is older than the history kept (oldest " +
        std::to_string(floor_) + "); re-read the store and resume from version " +
        std::to_string(current));
  }
  auto cursor = std::make_shared<Cursor>();
  cursor->kinds = kinds;
  cursor->limit = limit;
  cursor->position = fromVersion;
  auto it = std::partition_point(entries_.begin(), entries_.end(),
                                 [&](const Entry& e) { return e.version <= fromVersion; });
  cursor->nextSeq = firstSeq_ + static_cast<uint64_t>(it - entries_.begin());
  cursors_.push_back(cursor);
  return cursor;
}

Result<EventBatch> WatchHub::next(Cursor& c, std::chrono::milliseconds timeout) {
  std::unique_lock lk(mu_);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (c.done) return c.error;
    SHOAL_ASSERT(c.nextSeq >= firstSeq_);
    const uint64_t end = firstSeq_ + entries_.size();
    while (c.nextSeq < end) {
      const Entry& e = entries_[c.nextSeq - firstSeq_];
      ++c.nextSeq;
      if (e.version <= c.position) continue;  // the watch started past it
      c.position = e.version;
      if (!c.kinds.intersects(e.kinds)) continue;
      EventBatch batch;
      batch.version = e.version;
      batch.events.reserve(e.events.size());
      for (const Event& ev : e.events) {
        if (c.kinds.contains(ev.object->kind)) batch.events.push_back(ev);
      }
      return batch;
    }
    ++waiting_;
    std::cv_status woke = cv_.wait_until(lk, deadline);
    --waiting_;
    if (woke == std::cv_status::timeout && !c.done && c.nextSeq >= firstSeq_ + entries_.size()) {
      return Status::timeout("no change within " + std::to_string(timeout.count()) + " ms");
    }
  }
}

void WatchHub::cancel(Cursor& c) {
  std::lock_guard lk(mu_);
  finish(c, Status::cancelled("the watch was cancelled"));
  std::erase_if(cursors_, [](const std::shared_ptr<Cursor>& x) { return x->done; });
  cv_.notify_all();
}

uint64_t WatchHub::position(const Cursor& c) const {
  std::lock_guard lk(mu_);
  return c.position;
}

void WatchHub::reset(uint64_t floor) {
  std::lock_guard lk(mu_);
  firstSeq_ += entries_.size();
  entries_.clear();
  eventsHeld_ = 0;
  floor_ = floor;
  for (auto& c : cursors_) {
    finish(*c, Status::failedPrecondition(
                   "the store was replaced by a snapshot at version " + std::to_string(floor) +
                   "; re-read the store and resume from version " + std::to_string(floor)));
  }
  cursors_.clear();
  cv_.notify_all();
}

void WatchHub::close() {
  std::lock_guard lk(mu_);
  closed_ = true;
  for (auto& c : cursors_) finish(*c, Status::cancelled("the store was closed"));
  cursors_.clear();
  cv_.notify_all();
}

uint64_t WatchHub::floor() const {
  std::lock_guard lk(mu_);
  return floor_;
}

}  // namespace shoal::store
