#pragma once

#include <pthread.h>

namespace shoal::store {

// A reader-writer lock that prefers writers: once apply() asks for it, new readers wait, so a
// steady stream of views cannot starve the Raft apply path (glibc's std::shared_mutex prefers
// readers and does exactly that). Meets SharedMutex, so std::shared_lock / std::unique_lock
// work with it. Not recursive: a thread holding it shared must not take it again (it would
// deadlock behind a waiting writer).
class RwLock {
 public:
  RwLock();
  ~RwLock();
  RwLock(const RwLock&) = delete;
  RwLock& operator=(const RwLock&) = delete;

  void lock();
  bool try_lock();
  void unlock();
  void lock_shared();
  bool try_lock_shared();
  void unlock_shared();

 private:
  pthread_rwlock_t rw_;
};

}  // namespace shoal::store
