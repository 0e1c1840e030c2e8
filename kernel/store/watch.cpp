#include "kernel/store/watch.h"

namespace shoal::store {

Watch::Watch(std::shared_ptr<WatchHub> hub, std::shared_ptr<WatchHub::Cursor> cursor)
    : hub_(std::move(hub)), cursor_(std::move(cursor)) {}

Watch::~Watch() { cancel(); }

void Watch::cancel() { hub_->cancel(*cursor_); }

Result<EventBatch> Watch::nextBatch(std::chrono::milliseconds timeout) {
  if (!pending_.empty()) {
    EventBatch rest;
    rest.version = pendingVersion_;
    rest.events.assign(std::make_move_iterator(pending_.begin()),
                       std::make_move_iterator(pending_.end()));
    pending_.clear();
    return rest;
  }
  return hub_->next(*cursor_, timeout);
}

Result<Event> Watch::next(std::chrono::milliseconds timeout) {
  if (pending_.empty()) {
    auto batch = hub_->next(*cursor_, timeout);
    if (!batch) return batch.status();
    pendingVersion_ = batch->version;
    pending_.assign(std::make_move_iterator(batch->events.begin()),
                    std::make_move_iterator(batch->events.end()));
  }
  Event ev = std::move(pending_.front());
  pending_.pop_front();
  return ev;
}

uint64_t Watch::resumeVersion() const {
  if (!pending_.empty()) return pendingVersion_ - 1;
  return hub_->position(*cursor_);
}

}  // namespace shoal::store
