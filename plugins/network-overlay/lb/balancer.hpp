// Service VIP load balancing without IPVS: nftables DNAT inside each task's network namespace
// (see ruleset.hpp for the rules and README.md for the design). The network-overlay plugin
// calls apply() whenever the VIPs or the backends a task can reach change, and remove() when
// the task leaves.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "lb/ruleset.hpp"
#include "lb/status.hpp"

namespace shoal::overlay::lb {

// THREADS: every method may be called from any thread; calls are serialised by one mutex. The
// calling thread's network namespace is never changed: the work inside a task namespace runs on
// a short-lived thread that setns()es there and ends.
// ERRORS: returned as Status (messages start with "lb: "); nothing throws.
// NEEDS: CAP_SYS_ADMIN (setns) and CAP_NET_ADMIN (nftables, conntrack), i.e. root; the
// `conntrack` program (conntrack-tools) on PATH or in /usr/sbin or /sbin.
class Balancer {
 public:
  // Notable events (stale flows deleted, a namespace found replaced at its path). Called on
  // the thread that called apply()/remove(), with the balancer's mutex held: it must not call
  // the balancer.
  using Log = std::function<void(const std::string&)>;

  // Remembers nothing and touches nothing in the kernel: after a daemon restart a new
  // Balancer's first apply() for a task replaces whatever table the namespace holds.
  explicit Balancer(Log log = {});
  // Frees the cached nftables contexts; tables stay in the kernel (they live and die with their
  // namespaces, and a restarted daemon's apply() replaces them).
  ~Balancer();
  Balancer(const Balancer&) = delete;
  Balancer& operator=(const Balancer&) = delete;

  // Replaces, in one nft transaction, `table ip shoal_lb` of the network namespace at
  // `netnsPath` (a bind-mounted namespace file such as /run/netns/X, or /proc/PID/ns/net) so
  // that the task's traffic to each VIP is DNATed to its backends in rotation (any TCP/UDP port,
  // ICMP echo), and traffic to a VIP without backends is refused (TCP reset, ICMP
  // admin-prohibited). `vips` is the whole set: VIPs missing from it stop being translated;
  // repeated VIPs and backends are merged (normalizeVips). Borrowed for the call.
  //
  // Then deletes the conntrack entries of flows that went to a backend no longer behind their
  // VIP or to a VIP that is gone, so that they do not linger: new connections never reach a
  // removed backend once this returns, and its old flows break. Only done when something was
  // removed (one `conntrack -L`, and one `conntrack -D` per stale VIP/backend pair found), and
  // on a task's first apply() in this Balancer (what an earlier daemon left is unknown).
  //
  // Errors: an empty task id or path, a 0.0.0.0 VIP or backend, a namespace that cannot be
  // entered ("lb: task T: cannot enter network namespace PATH: REASON"), nft's message when the
  // transaction fails (the kernel then keeps the previous table), and a failed conntrack
  // clean-up ("lb: task T: rules applied, but stale flows remain: ..."; the next apply()
  // retries it).
  Status apply(const std::string& taskId, const std::string& netnsPath,
               const std::vector<Vip>& vips);

  // Deletes the task's table and the conntrack entries of flows to its VIPs, and forgets the
  // task. Idempotent: an unknown task (never applied, already removed, or applied only before a
  // restart: its table then dies with its namespace), or a namespace that vanished or was
  // replaced at its path, is not an error. Errors: nft's message (the task is kept, so a retry
  // can delete the table), or a failed conntrack clean-up (the table is gone and the task
  // forgotten).
  Status remove(const std::string& taskId);

  // Tasks applied and not removed.
  size_t taskCount() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace shoal::overlay::lb
