// The kernel side of the ingress routing mesh on one node (see ruleset.hpp for the rules and
// README.md): the veth between the host namespace and the ingress sandbox, the sysctls, and
// both `ip shoal_mesh` tables. The sandbox itself (the pseudo-task "ingress-sbox" on the
// ingress overlay) is the dataplane's: the plugin attaches it before apply() and detaches it
// after remove().
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "lb/status.hpp"
#include "mesh/ruleset.hpp"

namespace shoal::overlay::mesh {

using Status = lb::Status;

// THREADS: one caller at a time (the plugin serialises); the calling thread's namespace is
// never changed: work in a namespace runs on a short-lived thread that setns()es there and
// ends. Programs (`ip`, `conntrack`) are spawned from such threads, so they run there.
// ERRORS: returned as Status ("mesh: ..."); nothing throws.
// NEEDS: root; iproute2's `ip` and conntrack-tools' `conntrack` on PATH or in the sbin dirs.
class Mesh {
 public:
  using Log = std::function<void(const std::string&)>;

  // The host namespace is the CALLING thread's (the plugin's init thread). Touches nothing.
  explicit Mesh(Log log = {});
  ~Mesh();
  Mesh(const Mesh&) = delete;
  Mesh& operator=(const Mesh&) = delete;

  // Makes every port answer on this node through the sandbox at `sandboxNetns` (a namespace
  // file): the veth (host shoal-ig0 169.254.221.1/30, sandbox ig1 169.254.221.2/30, the
  // sandbox's default route via .1; remade when one end is missing), ip_forward=1 in both,
  // route_localnet=1 on the host's lo and shoal-ig0, then each namespace's table in one nft
  // transaction, then deletes the sandbox's conntrack entries of flows to backends no port
  // has any more. Idempotent: what an earlier daemon left is adopted or replaced.
  Status apply(const std::string& sandboxNetns, const std::vector<PublishedPort>& ports);

  // Deletes the host table, the veth and the host's flows to the sandbox, and the sandbox's
  // table when `sandboxNetns` is a namespace still. Idempotent (nothing there is no error).
  Status remove(const std::string& sandboxNetns);

  // The ports last applied (normalized); empty after remove().
  std::vector<PublishedPort> applied() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace shoal::overlay::mesh
