// The node facts that runtime plugins report in describe (header-only, C++17).
#pragma once

#include <shoal/plugin.h>
#include <shoal/plugin.hpp>

#include <Poco/JSON/Object.h>
#include <Poco/Types.h>

#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <string>
#include <string_view>

namespace shoal::plugins {

// Adds what the kernel says about this node to `doc`: os, arch, kernel, cpus, memory_bytes and
// (empty) engine_labels. Read at every describe rather than cached, so the answer follows CPU
// hotplug and memory changes. Failures are SHOAL_EIO errors prefixed with `plugin`'s name.
inline void addNodeFacts(std::string_view plugin, Poco::JSON::Object& doc) {
  struct utsname uts {};
  if (uname(&uts) != 0) {
    throw sdk::Error(SHOAL_EIO, std::string(plugin) + ": uname failed: " + std::strerror(errno));
  }
  // Swarm spells the OS as Go does ("linux") and the architecture as uname's machine.
  std::string os = uts.sysname;
  std::transform(os.begin(), os.end(), os.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page_size = sysconf(_SC_PAGESIZE);
  if (cpus < 1 || pages < 1 || page_size < 1) {
    throw sdk::Error(SHOAL_EIO,
                     std::string(plugin) + ": sysconf cannot tell this node's CPUs and memory");
  }
  doc.set("os", os);
  doc.set("arch", std::string(uts.machine));
  doc.set("kernel", std::string(uts.release));
  doc.set("cpus", static_cast<Poco::Int64>(cpus));
  doc.set("memory_bytes", static_cast<Poco::Int64>(pages) * static_cast<Poco::Int64>(page_size));
  doc.set("engine_labels", Poco::JSON::Object());
}

}  // namespace shoal::plugins
