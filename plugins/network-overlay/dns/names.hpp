// The name table the embedded DNS server answers from: which names resolve to which IPv4
// addresses on which overlay network.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace shoal::overlay::dns {

// On network `networkId`, `name` resolves to `ips` (IPv4, HOST byte order: 10.0.0.2 is
// 0x0A000002). The plugin gives, per network: service name -> VIP (task IPs in dnsrr mode),
// "tasks.<service>" -> task IPs, aliases -> IPs, task names -> task IP. Names compare ASCII
// case-insensitively, with or without one trailing '.'. A record with no ips makes the name
// known without addresses (NOERROR, no answers). Records with the same name and network merge.
struct Record {
  std::string name;
  std::string networkId;
  std::vector<uint32_t> ips;
};

// An immutable snapshot of the records; safe to read from any thread.
class NameTable {
 public:
  enum class Match {
    kNone,          // unknown here: forward it
    kFound,         // known on one of the networks; ips may be empty
    kOwnedMissing,  // "tasks.X" where X is known but tasks.X is not: NXDOMAIN, never forwarded
  };
  struct Result {
    Match match = Match::kNone;
    std::vector<uint32_t> ips;
  };

  NameTable() = default;
  explicit NameTable(std::vector<Record> records);

  // `name` (any case, trailing '.' optional) as seen from a sandbox on `networks`: the first
  // network in `networks` order that has the name gives the answer (as Docker's resolver does
  // per endpoint), so a service on two shared networks answers with the first one's VIP.
  Result lookup(std::string_view name, const std::vector<std::string>& networks) const;

  size_t size() const { return names_.size(); }

 private:
  struct Entry {
    std::string networkId;
    std::vector<uint32_t> ips;
  };
  const Entry* find(const std::string& normalized, const std::string& network) const;

  std::unordered_map<std::string, std::vector<Entry>> names_;  // key: normalizeName(name)
};

// "10.0.0.2" -> 0x0A000002; nullopt for anything but a dotted quad.
std::optional<uint32_t> parseIpv4(std::string_view text);
// 0x0A000002 -> "10.0.0.2".
std::string formatIpv4(uint32_t ip);

}  // namespace shoal::overlay::dns
