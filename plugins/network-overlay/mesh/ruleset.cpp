#include "mesh/ruleset.hpp"

#include <algorithm>
#include <sstream>
#include <tuple>

#include "lb/ruleset.hpp"

namespace shoal::overlay::mesh {
namespace {

using lb::formatIpv4;

std::string tableName() { return std::string(kTableFamily) + ' ' + kTableName; }

// Create-then-delete: the delete cannot fail, and nothing of the last table survives.
std::string replacing() {
  const std::string table = tableName();
  return "table " + table + " {\n}\ndelete table " + table + "\ntable " + table + " {\n";
}

}  // namespace

const char* protocolName(Protocol p) {
  switch (p) {
    case Protocol::kUdp:
      return "udp";
    case Protocol::kSctp:
      return "sctp";
    case Protocol::kTcp:
      break;
  }
  return "tcp";
}

std::vector<PublishedPort> normalizePorts(const std::vector<PublishedPort>& ports) {
  std::vector<PublishedPort> out;
  for (const PublishedPort& p : ports) {
    const bool seen = std::any_of(out.begin(), out.end(), [&](const PublishedPort& o) {
      return o.protocol == p.protocol && o.published == p.published;
    });
    if (seen) continue;
    PublishedPort q = p;
    q.backends.erase(std::remove(q.backends.begin(), q.backends.end(), 0u), q.backends.end());
    std::sort(q.backends.begin(), q.backends.end());
    q.backends.erase(std::unique(q.backends.begin(), q.backends.end()), q.backends.end());
    out.push_back(std::move(q));
  }
  std::sort(out.begin(), out.end(), [](const PublishedPort& a, const PublishedPort& b) {
    return std::make_tuple(a.protocol, a.published) < std::make_tuple(b.protocol, b.published);
  });
  return out;
}

std::string renderHostRuleset(const std::vector<PublishedPort>& list) {
  const std::vector<PublishedPort> ports = normalizePorts(list);
  std::ostringstream rules;
  for (const PublishedPort& p : ports) {
    rules << "\t\tfib daddr type local " << protocolName(p.protocol) << " dport " << p.published
          << " dnat to " << formatIpv4(kSandboxAddress) << "\n";
  }
  std::ostringstream out;
  out << replacing();
  out << "\tchain prerouting {\n\t\ttype nat hook prerouting priority -100; policy accept;\n"
      << rules.str() << "\t}\n";
  out << "\tchain output {\n\t\ttype nat hook output priority -100; policy accept;\n"
      << rules.str() << "\t}\n";
  // 127.0.0.1:P from this node: the sandbox must not answer to its own loopback.
  out << "\tchain postrouting {\n\t\ttype nat hook postrouting priority 100; policy accept;\n"
      << "\t\tip saddr 127.0.0.0/8 ip daddr " << formatIpv4(kSandboxAddress) << " oifname \""
      << kHostVeth << "\" masquerade\n\t}\n";
  out << "}\n";
  return out.str();
}

std::string renderSandboxRuleset(const std::vector<PublishedPort>& list) {
  const std::vector<PublishedPort> ports = normalizePorts(list);
  std::ostringstream out;
  out << replacing();
  out << "\tchain prerouting {\n\t\ttype nat hook prerouting priority -100; policy accept;\n";
  bool unavailable = false;
  for (const PublishedPort& p : ports) {
    if (p.backends.empty()) {
      unavailable = true;
      continue;
    }
    out << "\t\t" << protocolName(p.protocol) << " dport " << p.published << " dnat ip to ";
    if (p.backends.size() == 1) {
      out << formatIpv4(p.backends[0]) << ":" << p.target;  // nft refuses "A . P" here
    } else {
      // numgen inc: strict rotation, as the VIP balancer does.
      out << "numgen inc mod " << p.backends.size() << " map { ";
      for (size_t i = 0; i < p.backends.size(); ++i) {
        out << (i ? ", " : "") << i << " : " << formatIpv4(p.backends[i]) << " . " << p.target;
      }
      out << " }";
    }
    out << "\n";
  }
  out << "\t}\n";
  out << "\tchain postrouting {\n\t\ttype nat hook postrouting priority 100; policy accept;\n"
         "\t\toifname \"eth0\" masquerade\n\t}\n";
  if (unavailable) {
    // Not translated, such a packet is for the sandbox itself: refused at once, explicitly.
    out << "\tchain input {\n\t\ttype filter hook input priority 0; policy accept;\n";
    for (const PublishedPort& p : ports) {
      if (!p.backends.empty()) continue;
      out << "\t\t" << protocolName(p.protocol) << " dport " << p.published
          << (p.protocol == Protocol::kTcp ? " reject with tcp reset\n"
                                           : " reject with icmp type port-unreachable\n");
    }
    out << "\t}\n";
  }
  out << "}\n";
  return out.str();
}

std::string renderRemoval() {
  const std::string table = tableName();
  return "table " + table + " {\n}\ndelete table " + table + "\n";
}

}  // namespace shoal::overlay::mesh
