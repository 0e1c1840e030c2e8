#include "tests/support/netns_lab.h"

#include <unistd.h>

#include <stdexcept>

#include "tests/support/process.h"

namespace shoal::test {

bool NetnsLab::available() {
  if (geteuid() != 0) return false;
  return runCommand({"ip", "netns", "list"}).exitCode == 0 &&
         runCommand({"nft", "--version"}).exitCode == 0;
}

NetnsLab::NetnsLab(int nodes) : prefix_("shoal-t" + std::to_string(getpid())) {
  hub_ = prefix_ + "-hub";
  try {
    run({"ip", "netns", "add", hub_});
    made_.push_back(hub_);
    run({"ip", "-n", hub_, "link", "add", "br0", "type", "bridge"});
    run({"ip", "-n", hub_, "link", "set", "br0", "up"});
    for (int i = 1; i <= nodes; ++i) {
      const std::string name = prefix_ + "-n" + std::to_string(i);
      run({"ip", "netns", "add", name});
      made_.push_back(name);
      names_.push_back(name);
      const std::string peer = "v" + std::to_string(i);
      run({"ip", "-n", hub_, "link", "add", peer, "type", "veth", "peer", "name", "eth0", "netns",
           name});
      run({"ip", "-n", hub_, "link", "set", peer, "master", "br0", "up"});
      run({"ip", "-n", name, "link", "set", "lo", "up"});
      run({"ip", "-n", name, "addr", "add", address(i) + "/24", "dev", "eth0"});
      run({"ip", "-n", name, "link", "set", "eth0", "up"});
    }
  } catch (...) {
    cleanup();
    throw;
  }
}

NetnsLab::~NetnsLab() { cleanup(); }

void NetnsLab::cleanup() {
  for (auto it = made_.rbegin(); it != made_.rend(); ++it) {
    runCommand({"ip", "netns", "del", *it}, std::chrono::seconds(30));
  }
  made_.clear();
}

std::vector<std::string> NetnsLab::exec(int node) const {
  return {"nsenter", "--net=/run/netns/" + ns(node), "--"};
}

void NetnsLab::isolate(int node, bool cut) {
  std::vector<std::string> argv = exec(node);
  argv.push_back("nft");
  if (cut) {
    // One nft invocation, one atomic transaction: newline-separated commands.
    argv.push_back(
        "add table inet shoal_test_cut\n"
        "add chain inet shoal_test_cut in { type filter hook input priority 0; }\n"
        "add rule inet shoal_test_cut in iifname \"eth0\" drop\n"
        "add chain inet shoal_test_cut out { type filter hook output priority 0; }\n"
        "add rule inet shoal_test_cut out oifname \"eth0\" drop");
  } else {
    argv.push_back("delete table inet shoal_test_cut");
  }
  run(argv);
}

void NetnsLab::run(const std::vector<std::string>& argv) {
  RunResult r = runCommand(argv, std::chrono::seconds(30));
  if (r.exitCode != 0) {
    std::string cmd;
    for (const auto& a : argv) cmd += (cmd.empty() ? "" : " ") + a;
    throw std::runtime_error("`" + cmd + "` failed: " + r.err + r.out);
  }
}

}  // namespace shoal::test
