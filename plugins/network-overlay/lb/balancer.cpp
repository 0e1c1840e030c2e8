#include "lb/balancer.hpp"

#include <fcntl.h>
#include <nftables/libnftables.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "lb/conntrack.hpp"

namespace shoal::overlay::lb {
namespace {

// More cached contexts than this and the least recently used one is closed (one netlink socket
// each; a busy node should not run out of file descriptors because of us).
constexpr size_t kMaxContexts = 256;

// libnftables does not document itself as thread-safe across contexts; every call of ours into
// it, from any Balancer, holds this.
std::mutex& nftMutex() {
  static std::mutex mutex;
  return mutex;
}

// A network namespace, as the inode of its nsfs file.
struct NsId {
  dev_t dev = 0;
  ino_t ino = 0;
  bool operator==(const NsId& o) const { return dev == o.dev && ino == o.ino; }
  bool operator!=(const NsId& o) const { return !(*this == o); }
};

bool statNs(const char* path, NsId* id) {
  struct stat st {};
  if (::stat(path, &st) != 0) return false;
  id->dev = st.st_dev;
  id->ino = st.st_ino;
  return true;
}

std::string trimmed(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

// Runs `fn()` (returning Status) on a new thread inside the namespace at `path` and waits for
// it. The thread is never returned to our namespace: it ends instead, which is what keeps every
// other thread where it was. *vanished tells "no namespace at path" (ENOENT, or a file that is
// no namespace, e.g. after `ip netns delete` unmounted it) from other failures.
template <class F>
Status inNamespace(const std::string& path, bool* vanished, F&& fn) {
  Status result;
  *vanished = false;
  std::thread worker([&] {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      *vanished = errno == ENOENT;
      result = Status::error(std::string(std::strerror(errno)));
      return;
    }
    if (::setns(fd, CLONE_NEWNET) != 0) {
      *vanished = errno == EINVAL;
      result = Status::error(std::string("setns: ") + std::strerror(errno));
      ::close(fd);
      return;
    }
    ::close(fd);
    try {
      result = fn();
    } catch (const std::exception& e) {
      result = Status::error(e.what());
    } catch (...) {
      result = Status::error("unknown exception");
    }
  });
  worker.join();
  return result;
}

}  // namespace

struct Balancer::Impl {
  struct Task {
    std::string netnsPath;
    NsId ns;
    // Made on a thread inside `ns`, so its netlink socket talks to that namespace's nftables
    // for as long as it lives (it also keeps the namespace alive until freed). Kept rather than
    // made per call: nft_ctx_free() of a context whose transactions deleted a table blocks
    // 7-46 ms in close() (measured here: the kernel flushes the deferred destruction of the
    // old table, an RCU grace period) against ~0.4 ms for a small apply on a kept one.
    nft_ctx* ctx = nullptr;
    uint64_t lastUse = 0;
    VipTable applied;
    // What conntrack may hold that `applied` does not explain: true until a clean-up succeeded
    // (at first, flows from before a restart), and the VIPs dropped since.
    bool sweepPending = true;
    std::set<uint32_t> retired;
  };

  Log log;
  mutable std::mutex mutex;
  std::map<std::string, Task> tasks;  // guarded by mutex
  std::string conntrack;              // guarded by mutex; found on first need
  uint64_t uses = 0;                  // guarded by mutex

  void note(const std::string& message) {
    if (log) log(message);
  }

  static void freeContext(Task& task) {
    if (task.ctx == nullptr) return;
    std::lock_guard<std::mutex> nft(nftMutex());
    nft_ctx_free(task.ctx);
    task.ctx = nullptr;
  }

  void evictIfFull(const std::string& keep) {
    size_t open = 0;
    Task* oldest = nullptr;
    for (auto& [id, task] : tasks) {
      if (task.ctx == nullptr) continue;
      ++open;
      if (id != keep && (oldest == nullptr || task.lastUse < oldest->lastUse)) oldest = &task;
    }
    if (open >= kMaxContexts && oldest != nullptr) freeContext(*oldest);
  }

  // On a thread inside the task's namespace: makes the context when there is none.
  static Status runNft(Task& task, const NsId& here, const std::string& commands) {
    std::lock_guard<std::mutex> nft(nftMutex());
    if (task.ctx == nullptr) {
      task.ctx = nft_ctx_new(NFT_CTX_DEFAULT);
      if (task.ctx == nullptr) return Status::error("nft_ctx_new failed");
      nft_ctx_buffer_output(task.ctx);
      nft_ctx_buffer_error(task.ctx);
      task.ns = here;
    }
    const int rc = nft_run_cmd_from_buffer(task.ctx, commands.c_str());
    // Reading the buffers also empties them for the next call.
    nft_ctx_get_output_buffer(task.ctx);
    const std::string errors = trimmed(nft_ctx_get_error_buffer(task.ctx));
    if (rc != 0) return Status::error("nft: " + (errors.empty() ? "failed" : errors));
    return Status::ok();
  }

  const std::string& conntrackPath() {
    if (conntrack.empty()) conntrack = findConntrack();
    return conntrack;
  }
};

Balancer::Balancer(Log log) : impl_(std::make_unique<Impl>()) { impl_->log = std::move(log); }

Balancer::~Balancer() {
  for (auto& [id, task] : impl_->tasks) Impl::freeContext(task);
}

size_t Balancer::taskCount() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->tasks.size();
}

Status Balancer::apply(const std::string& taskId, const std::string& netnsPath,
                       const std::vector<Vip>& vips) {
  try {
    if (taskId.empty()) return Status::error("lb: empty task id");
    const std::string who = "lb: task " + taskId + ": ";
    if (netnsPath.empty()) return Status::error(who + "empty network namespace path");
    for (const Vip& vip : vips) {
      if (vip.address == 0) return Status::error(who + "VIP 0.0.0.0");
      for (uint32_t backend : vip.backends) {
        if (backend == 0) {
          return Status::error(who + "backend 0.0.0.0 for VIP " + formatIpv4(vip.address));
        }
      }
    }
    const VipTable next = normalizeVips(vips);
    const std::string commands = renderRuleset(vips);

    std::lock_guard<std::mutex> lock(impl_->mutex);
    NsId target;
    if (!statNs(netnsPath.c_str(), &target)) {
      return Status::error(who + "cannot enter network namespace " + netnsPath + ": " +
                           std::strerror(errno));
    }
    const bool known = impl_->tasks.count(taskId) != 0;
    Impl::Task& task = impl_->tasks[taskId];
    if (known && task.ns != target) {
      // A new namespace at the path (or another path): what we knew was about the old one.
      impl_->note(who + "network namespace at " + netnsPath + " is not the one applied before");
      Impl::freeContext(task);
      task = Impl::Task();
    }
    task.netnsPath = netnsPath;
    task.lastUse = ++impl_->uses;
    if (task.ctx == nullptr) impl_->evictIfFull(taskId);

    std::set<uint32_t> retired = task.retired;
    bool removed = false;
    for (const auto& [vip, backends] : task.applied) {
      const auto now = next.find(vip);
      if (now == next.end()) {
        retired.insert(vip);
        removed = true;
      } else if (!std::includes(now->second.begin(), now->second.end(), backends.begin(),
                                backends.end())) {
        removed = true;
      }
    }
    for (const auto& entry : next) retired.erase(entry.first);
    const bool sweep = task.sweepPending || removed || !retired.empty();
    std::set<uint32_t> watched = retired;
    for (const auto& entry : next) watched.insert(entry.first);
    const std::string conntrack = sweep ? impl_->conntrackPath() : std::string();

    Status nftStatus;
    Status sweepStatus;
    size_t deleted = 0;
    bool vanished = false;
    const Status entered = inNamespace(netnsPath, &vanished, [&] {
      NsId here;
      if (!statNs("/proc/thread-self/ns/net", &here) || here != target) {
        return Status::error("the namespace changed while entering it");
      }
      nftStatus = Impl::runNft(task, here, commands);
      if (nftStatus && sweep) sweepStatus = deleteStaleFlows(conntrack, watched, next, &deleted);
      return Status::ok();
    });
    if (!entered || !nftStatus) {
      if (!known && task.ctx == nullptr) impl_->tasks.erase(taskId);
      if (!entered) {
        return Status::error(who + "cannot enter network namespace " + netnsPath + ": " +
                             entered.message());
      }
      return Status::error(who + nftStatus.message());
    }
    task.applied = next;
    if (deleted > 0) {
      impl_->note(who + "deleted the conntrack entries of " + std::to_string(deleted) +
                  " stale VIP/backend pair(s)");
    }
    if (!sweep) return Status::ok();
    if (!sweepStatus) {
      task.sweepPending = true;
      task.retired = retired;
      return Status::error(who + "rules applied, but stale flows remain: " + sweepStatus.message());
    }
    task.sweepPending = false;
    task.retired.clear();
    return Status::ok();
  } catch (const std::exception& e) {
    return Status::error("lb: task " + taskId + ": " + e.what());
  } catch (...) {
    return Status::error("lb: task " + taskId + ": unknown exception");
  }
}

Status Balancer::remove(const std::string& taskId) {
  try {
    const std::string who = "lb: task " + taskId + ": ";
    std::lock_guard<std::mutex> lock(impl_->mutex);
    const auto it = impl_->tasks.find(taskId);
    if (it == impl_->tasks.end()) return Status::ok();
    Impl::Task& task = it->second;

    NsId target;
    bool gone = !statNs(task.netnsPath.c_str(), &target) || target != task.ns;
    Status nftStatus;
    Status sweepStatus;
    size_t deleted = 0;
    if (!gone) {
      std::set<uint32_t> watched = task.retired;
      for (const auto& entry : task.applied) watched.insert(entry.first);
      const std::string conntrack = impl_->conntrackPath();
      bool vanished = false;
      const Status entered = inNamespace(task.netnsPath, &vanished, [&] {
        NsId here;
        if (!statNs("/proc/thread-self/ns/net", &here) || here != target) {
          vanished = true;
          return Status::ok();
        }
        nftStatus = Impl::runNft(task, here, renderRemoval());
        if (nftStatus) sweepStatus = deleteStaleFlows(conntrack, watched, {}, &deleted);
        return Status::ok();
      });
      if (vanished) gone = true;
      if (!entered && !vanished) {
        return Status::error(who + "cannot enter network namespace " + task.netnsPath + ": " +
                             entered.message());
      }
    }
    // Gone: the old namespace, and its table, die with their last reference; ours is the
    // context, freed here.
    if (!gone && !nftStatus) return Status::error(who + nftStatus.message());
    Impl::freeContext(task);
    impl_->tasks.erase(it);
    if (!sweepStatus) {
      return Status::error(who + "table removed, but stale flows remain: " + sweepStatus.message());
    }
    if (deleted > 0) {
      impl_->note(who + "deleted the conntrack entries of " + std::to_string(deleted) +
                  " VIP/backend pair(s)");
    }
    return Status::ok();
  } catch (const std::exception& e) {
    return Status::error("lb: task " + taskId + ": " + e.what());
  } catch (...) {
    return Status::error("lb: task " + taskId + ": unknown exception");
  }
}

}  // namespace shoal::overlay::lb
