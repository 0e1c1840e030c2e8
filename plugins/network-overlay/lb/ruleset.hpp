// The nftables text of service VIP load balancing in one task's network namespace: what
// Balancer (balancer.hpp) loads, as a pure function so that it can be read and tested without
// root. C++17, no Poco, no SDK types.
//
// One table, `table ip shoal_lb`, per task namespace:
//   - chain nat_output (nat, hook output, priority -100; nft 1.0.6 refuses `dstnat` there):
//     `ip daddr vmap { VIP : jump vip_A_B_C_D, ... }`, one hash lookup whatever the number of
//     VIPs; chain vip_A_B_C_D holds `dnat to BACKEND` (one backend) or
//     `dnat to numgen inc mod N map { 0 : B0, 1 : B1, ... }`. Every protocol is translated (TCP
//     and UDP on any port, ICMP echo), and only a flow's first packet meets these chains:
//     conntrack keeps the choice for the rest of the flow.
//   - only when some VIP has no backends: set unavailable + chain filter_output (filter, hook
//     output, priority 0): TCP to those VIPs is answered with a reset and anything else with
//     ICMP admin-prohibited, so clients fail at once instead of waiting for an ARP answer that
//     never comes.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace shoal::overlay::lb {

// Addresses are IPv4 in host byte order (0x0a000001 is 10.0.0.1).
struct Vip {
  uint32_t address = 0;
  std::vector<uint32_t> backends;
};

// VIP address -> its backends, in canonical form: ordered by address, each VIP once (backends
// of repeated entries merged), backends sorted and unique.
using VipTable = std::map<uint32_t, std::vector<uint32_t>>;

inline constexpr const char* kTableFamily = "ip";
inline constexpr const char* kTableName = "shoal_lb";

VipTable normalizeVips(const std::vector<Vip>& vips);

// The whole batch that replaces the table, as one nft transaction: `table ip shoal_lb {}`
// (creates it when missing, so that the next command cannot fail), `delete table ip shoal_lb`,
// then the new table. The same VIPs always give the same text, whatever their order or
// repetitions (normalizeVips). An empty list gives the table with empty chains.
std::string renderRuleset(const std::vector<Vip>& vips);

// The batch that deletes the table, and succeeds when there is none.
std::string renderRemoval();

// "10.0.0.1" for 0x0a000001.
std::string formatIpv4(uint32_t address);

// The name of a VIP's chain: "vip_10_0_0_1".
std::string vipChainName(uint32_t address);

}  // namespace shoal::overlay::lb
