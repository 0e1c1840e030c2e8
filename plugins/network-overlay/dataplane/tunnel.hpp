// The encrypted overlays' tunnel: one userspace WireGuard interface per node (Debian's
// wireguard-go; this kernel has neither WireGuard nor IPsec, PLATFORM.md) carrying the VXLAN
// traffic of every encrypted network between the nodes' tunnel addresses. Keys and tunnel
// addresses come from the managers in the peers documents (network.h, "tunnel").
//
// wireguard-go is driven through its UAPI socket (/var/run/wireguard/<ifname>.sock, the
// cross-platform configuration protocol), so wireguard-tools are not needed. That socket path
// is shared by every network namespace of the machine, so the interface name is made unique
// per plugin instance (interfaceName).
//
// ERRORS: sdk::Error — SHOAL_ENOTSUP when wireguard-go or /dev/net/tun is missing, SHOAL_EIO
// when it cannot be started or refuses a configuration (with its errno).
// THREAD: any thread; startWireguard runs wireguard-go in the calling thread's network
// namespace, where the interface appears.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace shoal::overlay::dataplane {

using WireguardKey = std::array<uint8_t, 32>;

// "base64 of 32 bytes" (44 characters, as wg(8) writes keys); false for anything else.
bool parseWireguardKey(std::string_view text, WireguardKey* out);

// This node's end of the tunnel and the other nodes' ends.
struct TunnelSpec {
  WireguardKey privateKey{};
  uint32_t address = 0;  // this node's tunnel address (host order)
  int prefix = 0;        // the tunnel subnet's prefix length
  struct Node {
    WireguardKey publicKey{};
    uint32_t address = 0;  // its tunnel address
    bool operator==(const Node& o) const {
      return publicKey == o.publicKey && address == o.address;
    }
    bool operator!=(const Node& o) const { return !(*this == o); }
  };
  std::map<uint32_t, Node> nodes;  // by underlay address (a peer's node_addr)
  bool operator==(const TunnelSpec& o) const {
    return privateKey == o.privateKey && address == o.address && prefix == o.prefix &&
           nodes == o.nodes;
  }
  bool operator!=(const TunnelSpec& o) const { return !(*this == o); }
};

// WireGuard over IPv4 adds at most 60 bytes (IPv4 20, UDP 8, WireGuard 32); like wg-quick,
// Shoal leaves 80, room for an IPv6 underlay too.
constexpr unsigned kWireguardOverhead = 80;

// Empty when this node can run the tunnel; otherwise why not ("wireguard-go is not on PATH").
std::string wireguardUnavailable();

// "swg" and 8 hex digits of a hash of `seed` (the instance's netns_dir): at most 15 characters.
std::string interfaceName(const std::string& seed);

// Runs `wireguard-go ifname`, which makes the TUN interface and its UAPI socket and then
// detaches, outliving the daemon (as the containers do); deleting the interface ends it.
void startWireguard(const std::string& ifname);

// Sets the interface's key and listen port and makes its peers exactly `want`'s nodes (each at
// its underlay address and `port`, allowed only its tunnel address). `have` is what was set
// before (null: unknown, so every peer is replaced), to leave unchanged peers and their
// sessions alone.
void configureWireguard(const std::string& ifname, int port, const TunnelSpec& want,
                        const TunnelSpec* have);

// The nftables batch that makes the calling thread's namespace drop VXLAN packets (UDP to
// `vxlanPort`) for any of `vnis` that did not come out of the tunnel `ifname`: an encrypted
// network takes no frame that crossed the underlay in clear. `table inet shoal_tunnel`, replaced
// whole; with no VNI, the batch deletes it (and succeeds when there is none).
std::string renderTunnelFilter(const std::string& ifname, int vxlanPort,
                               const std::vector<uint32_t>& vnis);
// Runs an nft batch in the calling thread's namespace (libnftables).
void runNft(const std::string& batch);

}  // namespace shoal::overlay::dataplane
