// scripts/lab driven from a test: a lab of the test's own (its own name, so it never meets
// another lab), brought up in the constructor and taken down in the destructor.
#pragma once

#include <cppunit/extensions/HelperMacros.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "tests/support/process.h"

namespace shoal::test {

inline bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

inline std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

class Lab {
 public:
  explicit Lab(int nodes, std::vector<std::string> extraEnv = {})
      : name_("shoalt" + std::to_string(getpid())) {
    env_ = {"SHOAL_LAB=" + name_, "SHOAL_BIN=" + std::string(SHOAL_BIN_DIR),
            "SHOAL_PLUGINS=" + std::string(SHOAL_PLUGIN_BUILD_DIR)};
    env_.insert(env_.end(), extraEnv.begin(), extraEnv.end());
    RunResult up = lab({"up", std::to_string(nodes)}, std::chrono::seconds(120));
    if (up.exitCode != 0) {
      lab({"down"});
      CPPUNIT_FAIL("lab up failed: " + up.err);
    }
  }
  ~Lab() {
    if (exitLab() == this) exitLab() = nullptr;
    lab({"down"}, std::chrono::seconds(120));
  }
  // Benchmarks stop with std::exit on a failed step, which runs no destructors: a lab named
  // here is taken down at exit all the same (the last one named; until it is destroyed).
  void downAtExit() {
    static const bool registered = [] {
      std::atexit([] {
        if (Lab* l = exitLab()) l->lab({"down"}, std::chrono::seconds(120));
      });
      return true;
    }();
    (void)registered;
    exitLab() = this;
  }
  Lab(const Lab&) = delete;
  Lab& operator=(const Lab&) = delete;

  RunResult lab(std::vector<std::string> args,
                std::chrono::seconds limit = std::chrono::seconds(60)) const {
    args.insert(args.begin(), std::string(SHOAL_SOURCE_DIR) + "/scripts/lab");
    return runCommand(args, limit, env_);
  }
  // `shoal ARGS` on a node.
  RunResult on(const std::string& node, std::vector<std::string> args) const {
    args.insert(args.begin(), {"exec", node});
    return lab(args, std::chrono::seconds(150));
  }
  std::string ip(const std::string& node) const { return trim(lab({"ip", node}).out); }
  // The lab's names for a node: its network namespace, and its state directory.
  std::string name() const { return name_; }
  std::string netns(const std::string& node) const { return name_ + "-" + node; }
  std::string dir(const std::string& node) const { return "/run/" + name_ + "/" + node; }
  // ARGV run inside a node's network namespace (only that one: see PLATFORM.md).
  RunResult inNode(const std::string& node, std::vector<std::string> argv,
                   std::chrono::seconds limit = std::chrono::seconds(60)) const {
    argv.insert(argv.begin(), {"nsenter", "--net=/run/netns/" + netns(node)});
    return runCommand(argv, limit);
  }
  std::string log(const std::string& node) const { return lab({"log", node}).out; }

  // The `node ls` row of the node with this hostname, as seen from `from` ("" if none).
  std::string row(const std::string& from, const std::string& hostname) const {
    std::istringstream in(on(from, {"node", "ls"}).out);
    std::string line;
    while (std::getline(in, line)) {
      std::istringstream words(line);
      std::string id, second, third;
      words >> id >> second >> third;
      if (second == hostname || (second == "*" && third == hostname)) return line;
    }
    return "";
  }

 private:
  static Lab*& exitLab() {
    static Lab* lab = nullptr;
    return lab;
  }
  std::string name_;
  std::vector<std::string> env_;
};

}  // namespace shoal::test
