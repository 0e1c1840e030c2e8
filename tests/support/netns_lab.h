#pragma once

#include <string>
#include <vector>

namespace shoal::test {

// Network namespaces for multi-node tests, made with iproute2 and nftables (root only).
//
// Node i (1-based) gets a namespace "<prefix>-n<i>" with `lo` up and one interface `eth0`
// holding 10.231.0.<i>/24, its veth peer enslaved to a bridge in a hub namespace
// "<prefix>-hub". No namespace has a default route, so nothing can leave the machine; the
// host's own namespaces are never touched. The prefix includes the test's pid, so parallel runs
// never collide. The destructor deletes every namespace it made (which removes the veths and
// the bridge with them); a constructor that fails half-way cleans up what it made and throws
// std::runtime_error with the failing command's output.
class NetnsLab {
 public:
  explicit NetnsLab(int nodes);
  ~NetnsLab();
  NetnsLab(const NetnsLab&) = delete;
  NetnsLab& operator=(const NetnsLab&) = delete;

  // True when this process can make namespaces (root, with `ip` and `nft` on PATH).
  static bool available();

  const std::string& ns(int node) const { return names_.at(node - 1); }
  std::string address(int node) const { return "10.231.0." + std::to_string(node); }
  // argv prefix that runs a command inside node's namespace (network only: /sys stays the
  // host's, see ../shared/PLATFORM.md).
  std::vector<std::string> exec(int node) const;

  // Cut node off from every other node (an nftables table in its namespace that drops every
  // packet in and out of eth0: peers see silence, not resets), or restore it.
  void isolate(int node, bool cut);

 private:
  void run(const std::vector<std::string>& argv);
  void cleanup();

  std::string prefix_;
  std::string hub_;
  std::vector<std::string> names_;
  std::vector<std::string> made_;  // namespaces to delete
};

}  // namespace shoal::test
