// The OCI runtime the real-container tests drive: runc, or what SHOAL_TEST_OCI_RUNTIME names
// (CTest runs those suites a second time with crun, as *_crun), and whether it can run here.
#pragma once

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

namespace shoal::test {

inline const std::string& ociRuntime() {
  static const std::string path = [] {
    const char* env = std::getenv("SHOAL_TEST_OCI_RUNTIME");
    return std::string(env != nullptr && *env != '\0' ? env : "/usr/sbin/runc");
  }();
  return path;
}

// Why ociRuntime() cannot run containers on this host, "" when it can. crun refuses hybrid
// cgroups while the hugetlb controller is on the unified hierarchy (/proc/cgroups lists it
// with hierarchy 0); PLATFORM.md says how to move it, a change to the whole host that a test
// does not make.
inline std::string ociRuntimeUnusable() {
  if (access(ociRuntime().c_str(), X_OK) != 0) return ociRuntime() + " is not installed";
  if (ociRuntime().find("crun") == std::string::npos) return "";
  if (access("/sys/fs/cgroup/unified", F_OK) != 0) return "";  // v1 only, or pure v2
  std::ifstream in("/proc/cgroups");
  std::string name, hierarchy, rest;
  while (in >> name >> hierarchy && std::getline(in, rest)) {
    if (name == "hugetlb" && hierarchy == "0") {
      return "crun refuses this host's hybrid cgroups while hugetlb is on the unified "
             "hierarchy (PLATFORM.md)";
    }
  }
  return "";
}

}  // namespace shoal::test
