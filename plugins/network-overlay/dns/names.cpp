#include "dns/names.hpp"

#include <arpa/inet.h>

#include <algorithm>

#include "dns/message.hpp"

namespace shoal::overlay::dns {

NameTable::NameTable(std::vector<Record> records) {
  for (Record& r : records) {
    std::string key = normalizeName(r.name);
    if (key.empty()) continue;
    std::vector<Entry>& entries = names_[key];
    auto it = std::find_if(entries.begin(), entries.end(),
                           [&](const Entry& e) { return e.networkId == r.networkId; });
    if (it == entries.end()) {
      entries.push_back(Entry{std::move(r.networkId), {}});
      it = entries.end() - 1;
    }
    for (uint32_t ip : r.ips) {
      if (std::find(it->ips.begin(), it->ips.end(), ip) == it->ips.end()) it->ips.push_back(ip);
    }
  }
}

const NameTable::Entry* NameTable::find(const std::string& normalized,
                                        const std::string& network) const {
  auto it = names_.find(normalized);
  if (it == names_.end()) return nullptr;
  for (const Entry& e : it->second) {
    if (e.networkId == network) return &e;
  }
  return nullptr;
}

NameTable::Result NameTable::lookup(std::string_view name,
                                    const std::vector<std::string>& networks) const {
  const std::string key = normalizeName(name);
  Result result;
  if (key.empty()) return result;
  for (const std::string& network : networks) {
    if (const Entry* e = find(key, network)) {
      result.match = Match::kFound;
      result.ips = e->ips;
      return result;
    }
  }
  // "tasks.<service>" belongs to us when the service is visible: asking upstream would leak the
  // name and answer for a different zone.
  constexpr std::string_view kTasks = "tasks.";
  if (key.size() > kTasks.size() && key.compare(0, kTasks.size(), kTasks) == 0) {
    const std::string service = key.substr(kTasks.size());
    for (const std::string& network : networks) {
      if (find(service, network)) {
        result.match = Match::kOwnedMissing;
        return result;
      }
    }
  }
  return result;
}

std::optional<uint32_t> parseIpv4(std::string_view text) {
  const std::string s(text);
  in_addr a{};
  if (inet_pton(AF_INET, s.c_str(), &a) != 1) return std::nullopt;
  return ntohl(a.s_addr);
}

std::string formatIpv4(uint32_t ip) {
  return std::to_string(ip >> 24) + "." + std::to_string((ip >> 16) & 0xFF) + "." +
         std::to_string((ip >> 8) & 0xFF) + "." + std::to_string(ip & 0xFF);
}

}  // namespace shoal::overlay::dns
