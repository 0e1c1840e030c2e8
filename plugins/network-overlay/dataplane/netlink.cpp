#include "dataplane/netlink.hpp"

#include <shoal/plugin.h>
#include <shoal/plugin.hpp>

#include <arpa/inet.h>
#include <linux/if.h>
#include <linux/neighbour.h>
#include <linux/netlink.h>
#include <netlink/addr.h>
#include <netlink/cache.h>
#include <netlink/errno.h>
#include <netlink/handlers.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/link/bridge.h>
#include <netlink/route/link/veth.h>
#include <netlink/route/link/vxlan.h>
#include <netlink/route/neighbour.h>
#include <netlink/route/route.h>
#include <netlink/socket.h>
#include <sys/socket.h>

#include <cstring>
#include <memory>

#ifndef SOL_NETLINK
#define SOL_NETLINK 270
#endif

namespace shoal::overlay::dataplane {

// Reads the kernel's errno and extended-ack message out of an NLMSG_ERROR, so errors can say
// what the kernel said, not only libnl's translation of the errno.
struct NetlinkErrorHook {
  static int onError(struct sockaddr_nl*, struct nlmsgerr* e, void* arg) {
    auto* self = static_cast<Netlink*>(arg);
    self->kernelErrno_ = -e->error;
    const auto* hdr =
        reinterpret_cast<const struct nlmsghdr*>(reinterpret_cast<const char*>(e) - NLMSG_HDRLEN);
    if ((hdr->nlmsg_flags & NLM_F_ACK_TLVS) == 0) return NL_STOP;
    std::size_t offset = sizeof(*e);
    if ((hdr->nlmsg_flags & NLM_F_CAPPED) == 0) offset += e->msg.nlmsg_len - NLMSG_HDRLEN;
    offset = NLMSG_ALIGN(offset);
    const std::size_t total = hdr->nlmsg_len - NLMSG_HDRLEN;
    const char* base = reinterpret_cast<const char*>(e);
    while (offset + sizeof(struct nlattr) <= total) {
      const auto* attr = reinterpret_cast<const struct nlattr*>(base + offset);
      if (attr->nla_len < sizeof(struct nlattr) || offset + attr->nla_len > total) break;
      if ((attr->nla_type & NLA_TYPE_MASK) == NLMSGERR_ATTR_MSG) {
        const char* text = reinterpret_cast<const char*>(attr) + NLA_HDRLEN;
        self->kernelMessage_.assign(text, strnlen(text, attr->nla_len - NLA_HDRLEN));
      }
      offset += NLA_ALIGN(attr->nla_len);
    }
    return NL_STOP;  // libnl then returns the error as usual
  }
};

namespace {

struct LinkPut {
  void operator()(rtnl_link* l) const { rtnl_link_put(l); }
};
struct AddrPut {
  void operator()(nl_addr* a) const { nl_addr_put(a); }
};
struct RtAddrPut {
  void operator()(rtnl_addr* a) const { rtnl_addr_put(a); }
};
struct NeighPut {
  void operator()(rtnl_neigh* n) const { rtnl_neigh_put(n); }
};
struct CacheFree {
  void operator()(nl_cache* c) const { nl_cache_free(c); }
};
using LinkPtr = std::unique_ptr<rtnl_link, LinkPut>;
using AddrPtr = std::unique_ptr<nl_addr, AddrPut>;
using RtAddrPtr = std::unique_ptr<rtnl_addr, RtAddrPut>;
using NeighPtr = std::unique_ptr<rtnl_neigh, NeighPut>;
using CachePtr = std::unique_ptr<nl_cache, CacheFree>;

[[noreturn]] void fail(const std::string& message) { throw sdk::Error(SHOAL_EIO, message); }

AddrPtr ipv4Addr(uint32_t address) {
  const uint32_t be = htonl(address);
  AddrPtr a(nl_addr_build(AF_INET, &be, sizeof be));
  if (!a) throw std::bad_alloc();
  return a;
}

AddrPtr macAddr(const MacAddress& mac) {
  AddrPtr a(nl_addr_build(AF_LLC, mac.bytes.data(), mac.bytes.size()));
  if (!a) throw std::bad_alloc();
  return a;
}

bool toIpv4(nl_addr* a, uint32_t* out) {
  if (a == nullptr || nl_addr_get_family(a) != AF_INET || nl_addr_get_len(a) != 4) return false;
  uint32_t be = 0;
  std::memcpy(&be, nl_addr_get_binary_addr(a), 4);
  *out = ntohl(be);
  return true;
}

bool toMac(nl_addr* a, MacAddress* out) {
  if (a == nullptr || nl_addr_get_len(a) != 6) return false;
  std::memcpy(out->bytes.data(), nl_addr_get_binary_addr(a), 6);
  return true;
}

LinkPtr linkRef(int ifindex) {
  LinkPtr l(rtnl_link_alloc());
  if (!l) throw std::bad_alloc();
  rtnl_link_set_ifindex(l.get(), ifindex);
  return l;
}

}  // namespace

Netlink::Netlink() {
  sock_ = nl_socket_alloc();
  if (sock_ == nullptr) throw std::bad_alloc();
  const int err = nl_connect(sock_, NETLINK_ROUTE);
  if (err < 0) {
    nl_socket_free(sock_);
    sock_ = nullptr;
    fail(std::string("open a netlink socket: ") + nl_geterror(err));
  }
  // Ask for the kernel's own error text, without the echoed request.
  const int one = 1;
  setsockopt(nl_socket_get_fd(sock_), SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof one);
  setsockopt(nl_socket_get_fd(sock_), SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof one);
  nl_socket_modify_err_cb(sock_, NL_CB_CUSTOM, &NetlinkErrorHook::onError, this);
}

Netlink::~Netlink() {
  if (sock_ != nullptr) nl_socket_free(sock_);
}

void Netlink::check(int err, const std::string& step) {
  if (err >= 0) return;
  std::string message = step + ": ";
  if (kernelErrno_ != 0) {
    message += std::strerror(kernelErrno_);
  } else {
    message += nl_geterror(err);
  }
  if (!kernelMessage_.empty()) message += " (" + kernelMessage_ + ")";
  fail(message);
}

int Netlink::linkIndex(const std::string& name) {
  begin();
  rtnl_link* raw = nullptr;
  const int err = rtnl_link_get_kernel(sock_, 0, name.c_str(), &raw);
  LinkPtr link(raw);
  if (err == -NLE_OBJ_NOTFOUND || err == -NLE_NODEV) return 0;
  check(err, "look up link " + name);
  return rtnl_link_get_ifindex(link.get());
}

unsigned Netlink::linkMtu(int ifindex) {
  begin();
  rtnl_link* raw = nullptr;
  const int err = rtnl_link_get_kernel(sock_, ifindex, nullptr, &raw);
  LinkPtr link(raw);
  check(err, "look up link " + std::to_string(ifindex));
  return rtnl_link_get_mtu(link.get());
}

int Netlink::linkHoldingAddress(uint32_t address) {
  begin();
  nl_cache* raw = nullptr;
  const int err = rtnl_addr_alloc_cache(sock_, &raw);
  CachePtr cache(raw);
  check(err, "list addresses");
  for (nl_object* o = nl_cache_get_first(cache.get()); o != nullptr; o = nl_cache_get_next(o)) {
    auto* a = reinterpret_cast<rtnl_addr*>(o);
    uint32_t local = 0;
    if (rtnl_addr_get_family(a) == AF_INET && toIpv4(rtnl_addr_get_local(a), &local) &&
        local == address) {
      return rtnl_addr_get_ifindex(a);
    }
  }
  return 0;
}

void Netlink::addBridge(const std::string& name, unsigned mtu) {
  begin();
  LinkPtr link(rtnl_link_bridge_alloc());
  if (!link) throw std::bad_alloc();
  rtnl_link_set_name(link.get(), name.c_str());
  rtnl_link_set_mtu(link.get(), mtu);
  check(rtnl_link_add(sock_, link.get(), NLM_F_CREATE | NLM_F_EXCL), "create bridge " + name);
}

void Netlink::addVxlan(const std::string& name, uint32_t vni, int port, uint32_t local,
                       unsigned mtu, int targetNs, int lower) {
  begin();
  LinkPtr link(rtnl_link_vxlan_alloc());
  if (!link) throw std::bad_alloc();
  AddrPtr addr = ipv4Addr(local);
  rtnl_link_set_name(link.get(), name.c_str());
  rtnl_link_set_mtu(link.get(), mtu);
  rtnl_link_set_ns_fd(link.get(), targetNs);
  const std::string step = "create VXLAN device " + name + " (vni " + std::to_string(vni) + ")";
  check(rtnl_link_vxlan_set_id(link.get(), vni), step);
  check(rtnl_link_vxlan_set_port(link.get(), static_cast<uint32_t>(port)), step);
  check(rtnl_link_vxlan_set_local(link.get(), addr.get()), step);
  check(rtnl_link_vxlan_set_learning(link.get(), 0), step);
  check(rtnl_link_vxlan_set_proxy(link.get(), 1), step);
  if (lower != 0) check(rtnl_link_vxlan_set_link(link.get(), static_cast<uint32_t>(lower)), step);
  check(rtnl_link_add(sock_, link.get(), NLM_F_CREATE | NLM_F_EXCL), step);
}

void Netlink::addVeth(const std::string& name, const std::string& peerName,
                      const MacAddress& peerMac, unsigned mtu, int peerNs) {
  begin();
  rtnl_link* link = rtnl_link_veth_alloc();
  if (link == nullptr) throw std::bad_alloc();
  // The pair holds each other; veth_release drops both. get_peer returns a new reference.
  struct Release {
    rtnl_link* link;
    rtnl_link* peer;
    ~Release() {
      if (peer != nullptr) rtnl_link_put(peer);
      rtnl_link_veth_release(link);
    }
  } release{link, rtnl_link_veth_get_peer(link)};
  AddrPtr mac = macAddr(peerMac);
  rtnl_link_set_name(link, name.c_str());
  rtnl_link_set_mtu(link, mtu);
  rtnl_link_set_name(release.peer, peerName.c_str());
  rtnl_link_set_mtu(release.peer, mtu);
  rtnl_link_set_addr(release.peer, mac.get());
  rtnl_link_set_ns_fd(release.peer, peerNs);
  check(rtnl_link_add(sock_, link, NLM_F_CREATE | NLM_F_EXCL),
        "create veth pair " + name + "/" + peerName);
}

void Netlink::setMaster(int ifindex, int master, const std::string& what) {
  begin();
  LinkPtr orig = linkRef(ifindex);
  LinkPtr change(rtnl_link_alloc());
  if (!change) throw std::bad_alloc();
  rtnl_link_set_master(change.get(), master);
  check(rtnl_link_change(sock_, orig.get(), change.get(), 0), "enslave " + what);
}

void Netlink::setUp(int ifindex, const std::string& what) {
  begin();
  LinkPtr orig = linkRef(ifindex);
  LinkPtr change(rtnl_link_alloc());
  if (!change) throw std::bad_alloc();
  rtnl_link_set_flags(change.get(), IFF_UP);
  check(rtnl_link_change(sock_, orig.get(), change.get(), 0), "bring up " + what);
}

void Netlink::setMtu(int ifindex, unsigned mtu, const std::string& what) {
  begin();
  LinkPtr orig = linkRef(ifindex);
  LinkPtr change(rtnl_link_alloc());
  if (!change) throw std::bad_alloc();
  rtnl_link_set_mtu(change.get(), mtu);
  check(rtnl_link_change(sock_, orig.get(), change.get(), 0),
        "set the MTU of " + what + " to " + std::to_string(mtu));
}

void Netlink::deleteLink(int ifindex, const std::string& what) {
  begin();
  LinkPtr link = linkRef(ifindex);
  const int err = rtnl_link_delete(sock_, link.get());
  if (err == -NLE_OBJ_NOTFOUND || err == -NLE_NODEV) return;
  check(err, "delete " + what);
}

void Netlink::addAddress(int ifindex, const Cidr& address, const std::string& what) {
  begin();
  RtAddrPtr a(rtnl_addr_alloc());
  if (!a) throw std::bad_alloc();
  AddrPtr local = ipv4Addr(address.address);
  nl_addr_set_prefixlen(local.get(), address.prefix);
  AddrPtr broadcast = ipv4Addr(address.network() | ~address.mask());
  rtnl_addr_set_ifindex(a.get(), ifindex);
  const std::string step = "add address " + address.str() + " to " + what;
  check(rtnl_addr_set_local(a.get(), local.get()), step);
  check(rtnl_addr_set_broadcast(a.get(), broadcast.get()), step);
  check(rtnl_addr_add(sock_, a.get(), 0), step);
}

void Netlink::addDefaultRoute(int ifindex, uint32_t gateway, const std::string& what) {
  begin();
  struct RoutePut {
    void operator()(rtnl_route* r) const { rtnl_route_put(r); }
  };
  std::unique_ptr<rtnl_route, RoutePut> route(rtnl_route_alloc());
  if (!route) throw std::bad_alloc();
  AddrPtr any = ipv4Addr(0);
  nl_addr_set_prefixlen(any.get(), 0);
  AddrPtr via = ipv4Addr(gateway);
  const std::string step = "add the default route via " + what;
  rtnl_route_set_family(route.get(), AF_INET);
  rtnl_route_set_table(route.get(), RT_TABLE_MAIN);
  rtnl_route_set_scope(route.get(), RT_SCOPE_UNIVERSE);
  rtnl_route_set_type(route.get(), RTN_UNICAST);
  check(rtnl_route_set_dst(route.get(), any.get()), step);
  rtnl_nexthop* nh = rtnl_route_nh_alloc();
  if (nh == nullptr) throw std::bad_alloc();
  rtnl_route_nh_set_ifindex(nh, ifindex);
  rtnl_route_nh_set_gateway(nh, via.get());
  rtnl_route_add_nexthop(route.get(), nh);  // the route owns it from here
  check(rtnl_route_add(sock_, route.get(), NLM_F_CREATE | NLM_F_REPLACE), step);
}

std::vector<FdbEntry> Netlink::fdbEntries(int ifindex) {
  begin();
  nl_cache* raw = nullptr;
  // AF_ITER dumps every family the neighbour cache knows, AF_BRIDGE (the FDB) included.
  const int err = rtnl_neigh_alloc_cache_flags(sock_, &raw, NL_CACHE_AF_ITER);
  CachePtr cache(raw);
  check(err, "list FDB entries");
  std::vector<FdbEntry> out;
  for (nl_object* o = nl_cache_get_first(cache.get()); o != nullptr; o = nl_cache_get_next(o)) {
    auto* n = reinterpret_cast<rtnl_neigh*>(o);
    FdbEntry e;
    if (rtnl_neigh_get_family(n) == AF_BRIDGE && rtnl_neigh_get_ifindex(n) == ifindex &&
        (rtnl_neigh_get_flags(n) & NTF_SELF) != 0 &&
        (rtnl_neigh_get_state(n) & NUD_PERMANENT) != 0 && toMac(rtnl_neigh_get_lladdr(n), &e.mac) &&
        !(e.mac == MacAddress{}) && toIpv4(rtnl_neigh_get_dst(n), &e.dst)) {
      out.push_back(e);
    }
  }
  return out;
}

std::vector<NeighEntry> Netlink::neighbours(int ifindex) {
  begin();
  nl_cache* raw = nullptr;
  const int err = rtnl_neigh_alloc_cache(sock_, &raw);
  CachePtr cache(raw);
  check(err, "list neighbours");
  std::vector<NeighEntry> out;
  for (nl_object* o = nl_cache_get_first(cache.get()); o != nullptr; o = nl_cache_get_next(o)) {
    auto* n = reinterpret_cast<rtnl_neigh*>(o);
    NeighEntry e;
    if (rtnl_neigh_get_family(n) == AF_INET && rtnl_neigh_get_ifindex(n) == ifindex &&
        (rtnl_neigh_get_state(n) & NUD_PERMANENT) != 0 &&
        toIpv4(rtnl_neigh_get_dst(n), &e.address) && toMac(rtnl_neigh_get_lladdr(n), &e.mac)) {
      out.push_back(e);
    }
  }
  return out;
}

namespace {

// An FDB entry object. The destination must be set before the family: libnl refuses an
// AF_INET destination on an AF_BRIDGE object ("Address family mismatch", PLATFORM.md).
NeighPtr fdbObject(int ifindex, const FdbEntry& e, AddrPtr* keep) {
  NeighPtr n(rtnl_neigh_alloc());
  if (!n) throw std::bad_alloc();
  keep[0] = macAddr(e.mac);
  keep[1] = ipv4Addr(e.dst);
  rtnl_neigh_set_ifindex(n.get(), ifindex);
  rtnl_neigh_set_lladdr(n.get(), keep[0].get());
  rtnl_neigh_set_dst(n.get(), keep[1].get());
  rtnl_neigh_set_family(n.get(), AF_BRIDGE);
  rtnl_neigh_set_state(n.get(), NUD_PERMANENT);
  rtnl_neigh_set_flags(n.get(), NTF_SELF);
  return n;
}

NeighPtr neighObject(int ifindex, const NeighEntry& e, AddrPtr* keep) {
  NeighPtr n(rtnl_neigh_alloc());
  if (!n) throw std::bad_alloc();
  keep[0] = macAddr(e.mac);
  keep[1] = ipv4Addr(e.address);
  rtnl_neigh_set_ifindex(n.get(), ifindex);
  rtnl_neigh_set_dst(n.get(), keep[1].get());
  rtnl_neigh_set_lladdr(n.get(), keep[0].get());
  rtnl_neigh_set_state(n.get(), NUD_PERMANENT);
  return n;
}

}  // namespace

void Netlink::addFdb(int ifindex, const FdbEntry& e) {
  begin();
  AddrPtr keep[2];
  NeighPtr n = fdbObject(ifindex, e, keep);
  check(rtnl_neigh_add(sock_, n.get(), NLM_F_CREATE | NLM_F_REPLACE),
        "add FDB entry " + e.mac.str() + " dst " + formatIpv4(e.dst));
}

void Netlink::deleteFdb(int ifindex, const FdbEntry& e) {
  begin();
  AddrPtr keep[2];
  NeighPtr n = fdbObject(ifindex, e, keep);
  const int err = rtnl_neigh_delete(sock_, n.get(), 0);
  if (err == -NLE_OBJ_NOTFOUND || err == -NLE_NOADDR) return;
  check(err, "delete FDB entry " + e.mac.str() + " dst " + formatIpv4(e.dst));
}

void Netlink::addNeighbour(int ifindex, const NeighEntry& e) {
  begin();
  AddrPtr keep[2];
  NeighPtr n = neighObject(ifindex, e, keep);
  check(rtnl_neigh_add(sock_, n.get(), NLM_F_CREATE | NLM_F_REPLACE),
        "add neighbour " + formatIpv4(e.address) + " lladdr " + e.mac.str());
}

void Netlink::deleteNeighbour(int ifindex, const NeighEntry& e) {
  begin();
  AddrPtr keep[2];
  NeighPtr n = neighObject(ifindex, e, keep);
  const int err = rtnl_neigh_delete(sock_, n.get(), 0);
  if (err == -NLE_OBJ_NOTFOUND || err == -NLE_NOADDR) return;
  check(err, "delete neighbour " + formatIpv4(e.address));
}

}  // namespace shoal::overlay::dataplane
