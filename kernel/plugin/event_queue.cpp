#include "kernel/plugin/event_queue.h"

#include "kernel/common/log.h"

namespace shoal::plugin {

EventQueue::EventQueue(std::size_t capacity) : capacity_(capacity) {}

EventQueue::~EventQueue() { stop(); }

void EventQueue::setHandler(Handler handler) { handler_ = std::move(handler); }

void EventQueue::start() {
  std::lock_guard<std::mutex> lock(mu_);
  if (thread_.joinable()) return;
  stopping_ = false;
  thread_ = std::thread([this] { run(); });
}

void EventQueue::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

shoal_status EventQueue::push(PluginEvent event) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (queue_.size() >= capacity_) {
      ++dropped_;
      return SHOAL_ENOMEM;
    }
    queue_.push_back(std::move(event));
  }
  cv_.notify_one();
  return SHOAL_OK;
}

std::size_t EventQueue::dropped() const {
  std::lock_guard<std::mutex> lock(mu_);
  return dropped_;
}

void EventQueue::run() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
    if (queue_.empty() && stopping_) return;
    PluginEvent ev = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    if (handler_) {
      try {
        handler_(ev);
      } catch (const std::exception& e) {
        log::error("plugin", "event handler failed", {{"plugin", ev.plugin}, {"error", e.what()}});
      }
    }
    lock.lock();
  }
}

}  // namespace shoal::plugin
