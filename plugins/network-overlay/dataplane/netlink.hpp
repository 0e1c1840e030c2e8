// A NETLINK_ROUTE socket (libnl-route-3) and the few link, address, neighbour and FDB requests
// the overlay needs. A socket is bound to the network namespace of the thread that opened it,
// for its whole life (PLATFORM.md), so one socket per namespace lets the dataplane work in a
// namespace without entering it.
//
// ERRORS: every request throws shoal::sdk::Error(SHOAL_EIO) naming the step, the kernel's
// errno message and, when the kernel sent one, its extended-ack text ("create vxlan0 (vni
// 4097): File exists (A VXLAN device with the specified VNI already exists)").
// THREAD: one socket is used by one thread at a time.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "dataplane/documents.hpp"

struct nl_sock;

namespace shoal::overlay::dataplane {

struct FdbEntry {  // a VXLAN forwarding entry: MAC -> remote VTEP
  MacAddress mac;
  uint32_t dst = 0;
};

struct NeighEntry {  // a permanent IPv4 neighbour
  uint32_t address = 0;
  MacAddress mac;
};

class Netlink {
 public:
  // Opens a socket in the calling thread's network namespace.
  Netlink();
  ~Netlink();
  Netlink(const Netlink&) = delete;
  Netlink& operator=(const Netlink&) = delete;

  // The index of the link called `name`, 0 when there is none.
  int linkIndex(const std::string& name);
  unsigned linkMtu(int ifindex);
  // The index of the link holding IPv4 address `address` (host order), 0 when none does.
  int linkHoldingAddress(uint32_t address);

  void addBridge(const std::string& name, unsigned mtu);
  // A VXLAN device made by this socket's namespace (which keeps its UDP socket) directly in
  // the namespace `targetNs` (IFLA_NET_NS_FD: create and move in one request). `lower`, when
  // not 0, is the link its packets must leave by (IFLA_VXLAN_LINK, in this namespace); the
  // kernel deletes the device with it.
  void addVxlan(const std::string& name, uint32_t vni, int port, uint32_t local, unsigned mtu,
                int targetNs, int lower = 0);
  void setMtu(int ifindex, unsigned mtu, const std::string& what);
  // A veth pair: `name` here, `peerName` (with `peerMac`) in the namespace `peerNs`.
  void addVeth(const std::string& name, const std::string& peerName, const MacAddress& peerMac,
               unsigned mtu, int peerNs);
  void setMaster(int ifindex, int master, const std::string& what);
  void setUp(int ifindex, const std::string& what);
  void deleteLink(int ifindex, const std::string& what);
  void addAddress(int ifindex, const Cidr& address, const std::string& what);
  // The IPv4 default route (main table) via `gateway` on `ifindex`; replaces one there was.
  void addDefaultRoute(int ifindex, uint32_t gateway, const std::string& what);

  // The permanent unicast FDB entries (NTF_SELF, with a remote) of VXLAN device `ifindex`.
  std::vector<FdbEntry> fdbEntries(int ifindex);
  // The permanent IPv4 neighbours of `ifindex`.
  std::vector<NeighEntry> neighbours(int ifindex);
  void addFdb(int ifindex, const FdbEntry& e);  // create or replace
  void deleteFdb(int ifindex, const FdbEntry& e);
  void addNeighbour(int ifindex, const NeighEntry& e);  // create or replace
  void deleteNeighbour(int ifindex, const NeighEntry& e);

 private:
  friend struct NetlinkErrorHook;
  void check(int err, const std::string& step);
  void begin() {
    kernelErrno_ = 0;
    kernelMessage_.clear();
  }

  struct nl_sock* sock_ = nullptr;
  int kernelErrno_ = 0;        // from the last NLMSG_ERROR
  std::string kernelMessage_;  // its extended ack text, if any
};

}  // namespace shoal::overlay::dataplane
