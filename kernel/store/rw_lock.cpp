#include "kernel/store/rw_lock.h"

#include "kernel/common/assert.h"

namespace shoal::store {

RwLock::RwLock() {
  pthread_rwlockattr_t attr;
  SHOAL_CHECK(pthread_rwlockattr_init(&attr) == 0);
  SHOAL_CHECK(pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP) ==
              0);
  SHOAL_CHECK(pthread_rwlock_init(&rw_, &attr) == 0);
  pthread_rwlockattr_destroy(&attr);
}

RwLock::~RwLock() { pthread_rwlock_destroy(&rw_); }

void RwLock::lock() { SHOAL_CHECK(pthread_rwlock_wrlock(&rw_) == 0); }
bool RwLock::try_lock() { return pthread_rwlock_trywrlock(&rw_) == 0; }
void RwLock::unlock() { pthread_rwlock_unlock(&rw_); }
void RwLock::lock_shared() { SHOAL_CHECK(pthread_rwlock_rdlock(&rw_) == 0); }
bool RwLock::try_lock_shared() { return pthread_rwlock_tryrdlock(&rw_) == 0; }
void RwLock::unlock_shared() { pthread_rwlock_unlock(&rw_); }

}  // namespace shoal::store
