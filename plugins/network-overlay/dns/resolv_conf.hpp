// The upstream resolvers the embedded DNS server forwards unknown names to.
#pragma once

#include <sys/socket.h>

#include <string>
#include <string_view>
#include <vector>

#include "dns/status.hpp"

namespace shoal::overlay::dns {

// One upstream resolver: a numeric IPv4 or IPv6 address (IPv6 may carry a %zone) and a port.
struct Upstream {
  sockaddr_storage addr{};
  socklen_t addrLen = 0;
  std::string text;  // "10.0.0.1:53", "[fe80::1%eth0]:53"
};

// Parses "ADDR" or "ADDR:PORT" ("[V6]:PORT" for IPv6; a bare IPv6 address takes
// `defaultPort`). Numeric only: nothing is looked up. False for anything else.
bool parseUpstream(std::string_view spec, uint16_t defaultPort, Upstream* out);

// What resolv.conf says: every "nameserver ADDR" line in order (port 53), except loopback
// resolvers (127.0.0.0/8, ::1, ::ffff:127.x), which a task could not reach from its own
// namespace and which Docker skips too; those, and unparseable addresses, go to `skipped`.
struct ResolvConf {
  std::vector<Upstream> upstreams;
  std::vector<std::string> skipped;
};
ResolvConf parseResolvConf(std::string_view text);

// Reads and parses the file at `path`; an error ("dns: cannot read PATH: REASON") when it cannot
// be read.
Status readResolvConf(const std::string& path, ResolvConf* out);

// True for 127.0.0.0/8, ::1 and IPv4-mapped 127.0.0.0/8.
bool isLoopback(const Upstream& upstream);

}  // namespace shoal::overlay::dns
