// The nftables text of the ingress routing mesh on one node, as pure functions (no root needed
// to read or test them). C++17, no Poco, no SDK types. Docker's layout, without IPVS:
//
//   client -> node:P --(host namespace: table ip shoal_mesh, DNAT to 169.254.221.2:P)-->
//   veth shoal-ig0/ig1 --> ingress sandbox (table ip shoal_mesh: DNAT P to a backend's
//   address on the ingress network and target port, in rotation; masquerade out of eth0)
//   --> the ingress overlay --> the task, on any node.
//
// Host table: chains prerouting and output (nat, priority -100) with
//   `fib daddr type local tcp dport P dnat to 169.254.221.2` per published port (so every
//   local address answers, 127.0.0.1 included), and postrouting (nat, priority 100)
//   masquerading 127.0.0.0/8 sources towards the sandbox (it would answer its own loopback).
// Sandbox table: chain prerouting (nat, -100): `tcp dport P dnat ip to numgen inc mod N map
//   { 0 : B0 . T, ... }` (one backend: `dnat ip to B0:T`); postrouting (nat, 100):
//   `oifname "eth0" masquerade`, so tasks answer through this sandbox; and, only when a port
//   has no backends, input (filter, 0): a TCP reset (ICMP port unreachable for UDP, SCTP).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace shoal::overlay::mesh {

enum class Protocol { kTcp, kUdp, kSctp };

// One published port of this node (ingress mode): its backends are the addresses (IPv4, host
// byte order) of the service's running tasks on the ingress network.
struct PublishedPort {
  Protocol protocol = Protocol::kTcp;
  uint16_t published = 0;
  uint16_t target = 0;
  std::vector<uint32_t> backends;
  bool operator==(const PublishedPort& o) const {
    return protocol == o.protocol && published == o.published && target == o.target &&
           backends == o.backends;
  }
};

inline constexpr const char* kTableFamily = "ip";
inline constexpr const char* kTableName = "shoal_mesh";
inline constexpr const char* kHostVeth = "shoal-ig0";        // in the host namespace
inline constexpr const char* kSandboxVeth = "ig1";           // in the ingress sandbox
inline constexpr const char* kSandboxTask = "ingress-sbox";  // the dataplane's pseudo-task
inline constexpr uint32_t kHostAddress = 0xa9fedd01;         // 169.254.221.1
inline constexpr uint32_t kSandboxAddress = 0xa9fedd02;      // 169.254.221.2
inline constexpr int kVethPrefix = 30;

// Canonical form: ordered by (protocol, published port); a port listed again is dropped (the
// first entry wins); backends sorted and unique; 0.0.0.0 backends dropped.
std::vector<PublishedPort> normalizePorts(const std::vector<PublishedPort>& ports);

// The batches that replace the table in one nft transaction each (`table ip shoal_mesh {}`,
// `delete table ip shoal_mesh`, the new table), so an earlier daemon's table is no obstacle.
// The same ports always give the same text (normalizePorts).
std::string renderHostRuleset(const std::vector<PublishedPort>& ports);
std::string renderSandboxRuleset(const std::vector<PublishedPort>& ports);
// The batch that deletes the table, and succeeds when there is none.
std::string renderRemoval();

const char* protocolName(Protocol p);  // "tcp", "udp", "sctp"

}  // namespace shoal::overlay::mesh
