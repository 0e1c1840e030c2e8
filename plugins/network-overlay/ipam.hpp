// network-overlay's manager half: address management for overlay networks (network.h,
// "manager side"). Runs on the leader, in the allocator's one thread; the cluster store holds
// every allocation, and restore() replays them when a manager becomes leader, so nothing is
// ever handed out twice across leader changes.
//
// Networks get a subnet (the requested one, or the first free /24 of the default pool
// 10.0.0.0/8, as Docker's default address pool), a gateway (requested, or the subnet's first
// host address) and a VXLAN network id (the first free from 4096, as Docker's overlay driver).
// Endpoints (task addresses and service VIPs) get the lowest free host address of their
// network, never the network address, the broadcast address or the gateway; a requested
// address is given only when free. MAC addresses derive from the IPv4 address (02:42:a.b.c.d),
// so they are unique wherever the addresses are.
//
// Errors are shoal::sdk::Error: SHOAL_EINVAL for a bad document, SHOAL_EEXIST for a subnet
// that overlaps another network's or an address in use, SHOAL_ENOSPC when a pool or subnet is
// exhausted, SHOAL_ENOENT for an endpoint on an unknown network.
//
// THREAD: not thread-safe; the plugin host serialises calls per instance.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>

namespace shoal::overlay {

// An IPv4 subnet: base address (host order) and prefix length.
struct Subnet {
  uint32_t base = 0;
  int prefix = 0;
  uint32_t size() const { return prefix == 0 ? 0xFFFFFFFFu : (1u << (32 - prefix)); }
  uint32_t last() const { return base + (size() - 1); }
  bool contains(uint32_t a) const { return a >= base && a <= last(); }
  bool overlaps(const Subnet& o) const { return base <= o.last() && o.base <= last(); }
};

// "10.0.1.0/24" → Subnet; false when it is not a CIDR or has host bits set.
bool parseSubnet(const std::string& text, Subnet* out, std::string* error);
// "10.0.1.5" → host-order address; false when it is not a dotted quad.
bool parseAddress(const std::string& text, uint32_t* out);
std::string formatAddress(uint32_t a);
std::string formatSubnet(const Subnet& s);
// 02:42 followed by the address's four bytes (Docker's scheme).
std::string macFor(uint32_t a);

class Ipam {
 public:
  // A JSON array of allocation results (shoal.network-alloc/v1) and endpoint allocations
  // (shoal.endpoint/v1), as the store holds them; replaces whatever was known.
  void restore(const std::string& json);
  // A network document (shoal.network/v1) → an allocation result (shoal.network-alloc/v1).
  // Allocating a network already allocated returns its allocation.
  std::string allocateNetwork(const std::string& json);
  void releaseNetwork(const std::string& id);
  // An endpoint request (shoal.endpoint-req/v1) → an endpoint allocation (shoal.endpoint/v1).
  // The same owner asking again on the same network gets the same address.
  std::string allocateEndpoint(const std::string& json);
  // An endpoint allocation, or at least {"network_id", "address"}; releasing what is not
  // allocated is not an error.
  void releaseEndpoint(const std::string& json);

  std::size_t networks() const { return networks_.size(); }

 private:
  struct Network {
    std::string id;
    Subnet subnet;
    uint32_t gateway = 0;
    uint32_t vni = 0;
    std::map<uint32_t, std::string> used;  // address -> owner
    uint32_t next = 0;                     // where the next free-address search starts
  };
  Network& adopt(const std::string& id, const Subnet& subnet, uint32_t gateway, uint32_t vni);
  bool subnetFree(const Subnet& s, const std::string& except) const;

  std::map<std::string, Network> networks_;
  std::set<uint32_t> vnis_;
  // Endpoints restored before their network (restore() accepts any order).
  std::map<std::string, std::map<uint32_t, std::string>> orphans_;
};

}  // namespace shoal::overlay
