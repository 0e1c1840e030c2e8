#include "lb/ruleset.hpp"

#include <algorithm>
#include <sstream>

namespace shoal::overlay::lb {

VipTable normalizeVips(const std::vector<Vip>& vips) {
  VipTable table;
  for (const Vip& vip : vips) {
    auto& backends = table[vip.address];
    backends.insert(backends.end(), vip.backends.begin(), vip.backends.end());
  }
  for (auto& [address, backends] : table) {
    std::sort(backends.begin(), backends.end());
    backends.erase(std::unique(backends.begin(), backends.end()), backends.end());
  }
  return table;
}

std::string formatIpv4(uint32_t a) {
  return std::to_string(a >> 24) + '.' + std::to_string((a >> 16) & 0xff) + '.' +
         std::to_string((a >> 8) & 0xff) + '.' + std::to_string(a & 0xff);
}

std::string vipChainName(uint32_t a) {
  std::string name = "vip_" + formatIpv4(a);
  std::replace(name.begin(), name.end(), '.', '_');
  return name;
}

std::string renderRuleset(const std::vector<Vip>& list) {
  const VipTable vips = normalizeVips(list);
  const std::string table = std::string(kTableFamily) + ' ' + kTableName;
  std::ostringstream out;
  // Create-then-delete makes the delete safe on a namespace that has no table yet (after a
  // daemon restart nothing is remembered), and leaves no stale chain or map from the last
  // apply; the kernel applies the three commands as one transaction.
  out << "table " << table << " {\n}\n";
  out << "delete table " << table << "\n";
  out << "table " << table << " {\n";

  std::vector<uint32_t> unavailable;
  std::vector<uint32_t> balanced;
  for (const auto& [address, backends] : vips) {
    (backends.empty() ? unavailable : balanced).push_back(address);
  }

  out << "\tchain nat_output {\n"
         "\t\ttype nat hook output priority -100; policy accept;\n";
  if (!balanced.empty()) {
    out << "\t\tip daddr vmap {";
    const char* sep = "\n";
    for (uint32_t address : balanced) {
      out << sep << "\t\t\t" << formatIpv4(address) << " : jump " << vipChainName(address);
      sep = ",\n";
    }
    out << "\n\t\t}\n";
  }
  out << "\t}\n";

  for (uint32_t address : balanced) {
    const std::vector<uint32_t>& backends = vips.at(address);
    out << "\tchain " << vipChainName(address) << " {\n\t\t";
    if (backends.size() == 1) {
      out << "dnat to " << formatIpv4(backends[0]);
    } else {
      // numgen inc: strict rotation, so N new flows land exactly evenly (random would not).
      out << "dnat to numgen inc mod " << backends.size() << " map { ";
      for (size_t i = 0; i < backends.size(); ++i) {
        out << (i ? ", " : "") << i << " : " << formatIpv4(backends[i]);
      }
      out << " }";
    }
    out << "\n\t}\n";
  }

  // Only when needed: a filter chain sees every packet of every flow, not only a flow's first.
  if (!unavailable.empty()) {
    out << "\tset unavailable {\n\t\ttype ipv4_addr\n\t\telements = { ";
    for (size_t i = 0; i < unavailable.size(); ++i) {
      out << (i ? ", " : "") << formatIpv4(unavailable[i]);
    }
    out << " }\n\t}\n";
    out << "\tchain filter_output {\n"
           "\t\ttype filter hook output priority 0; policy accept;\n"
           "\t\tip daddr @unavailable meta l4proto tcp reject with tcp reset\n"
           "\t\tip daddr @unavailable reject with icmp type admin-prohibited\n"
           "\t}\n";
  }
  out << "}\n";
  return out.str();
}

std::string renderRemoval() {
  const std::string table = std::string(kTableFamily) + ' ' + kTableName;
  // nft 1.0.6 has no `destroy`: create-then-delete is the idempotent delete.
  return "table " + table + " {\n}\ndelete table " + table + "\n";
}

}  // namespace shoal::overlay::lb
