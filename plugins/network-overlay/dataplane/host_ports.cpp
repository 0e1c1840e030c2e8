#include "dataplane/host_ports.hpp"

#include <shoal/plugin.h>
#include <shoal/plugin.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace shoal::overlay::dataplane {

std::string renderHostPortsRuleset(const std::vector<HostMapping>& mappings) {
  std::string out = "table ip shoal_hostports {}\ndelete table ip shoal_hostports\n";
  if (mappings.empty()) return out;
  std::string rules;
  for (const HostMapping& m : mappings) {
    rules += "    fib daddr type local " + m.port.protocol + " dport " +
             std::to_string(m.port.published) + " dnat to " + formatIpv4(m.taskAddress) + ":" +
             std::to_string(m.port.target) + "\n";
  }
  const std::string pool = formatIpv4(kHostPool) + "/" + std::to_string(kHostPoolPrefix);
  out += "table ip shoal_hostports {\n";
  // The host links carry route_localnet (for 127.0.0.1 clients): without this, a task with
  // CAP_NET_RAW could send to the node's 127.0.0.1 services through its link (CVE-2020-8558).
  out +=
      "  chain guard {\n    type filter hook prerouting priority -300; policy accept;\n"
      "    iifname \"shv*\" ip daddr 127.0.0.0/8 drop\n  }\n";
  out += "  chain prerouting {\n    type nat hook prerouting priority -100; policy accept;\n" +
         rules + "  }\n";
  out += "  chain output {\n    type nat hook output priority -100; policy accept;\n" + rules +
         "  }\n";
  out += "  chain postrouting {\n    type nat hook postrouting priority 100; policy accept;\n";
  out += "    ip saddr 127.0.0.0/8 ip daddr " + pool + " masquerade\n";
  out += "    ip saddr " + pool + " oifname != \"shv*\" masquerade\n";
  out += "  }\n}\n";
  return out;
}

void writeSysctl(const std::string& key, const char* value) {
  const std::string path = "/proc/sys/net/" + key;
  const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) throw sdk::Error(SHOAL_EIO, "open " + path + ": " + std::strerror(errno));
  const std::size_t len = std::strlen(value);
  const ssize_t n = ::write(fd, value, len);
  const int saved = errno;
  ::close(fd);
  if (n != static_cast<ssize_t>(len)) {
    throw sdk::Error(SHOAL_EIO, "write " + path + ": " + std::strerror(saved));
  }
}

}  // namespace shoal::overlay::dataplane
