#include "dns/resolv_conf.hpp"

#include <netdb.h>
#include <netinet/in.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <system_error>

namespace shoal::overlay::dns {
namespace {

bool resolveNumeric(const std::string& host, uint16_t port, Upstream* out) {
  if (host.empty()) return false;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const std::string service = std::to_string(port);
  if (getaddrinfo(host.c_str(), service.c_str(), &hints, &res) != 0 || res == nullptr) {
    return false;
  }
  Upstream u;
  std::memcpy(&u.addr, res->ai_addr, res->ai_addrlen);
  u.addrLen = res->ai_addrlen;
  const bool v6 = res->ai_family == AF_INET6;
  freeaddrinfo(res);
  u.text = (v6 ? "[" + host + "]" : host) + ":" + service;
  *out = std::move(u);
  return true;
}

bool parsePort(std::string_view text, uint16_t* port) {
  if (text.empty() || text.size() > 5) return false;
  unsigned value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    value = value * 10 + static_cast<unsigned>(c - '0');
  }
  if (value == 0 || value > 65535) return false;
  *port = static_cast<uint16_t>(value);
  return true;
}

}  // namespace

bool parseUpstream(std::string_view spec, uint16_t defaultPort, Upstream* out) {
  uint16_t port = defaultPort;
  std::string host;
  if (!spec.empty() && spec.front() == '[') {
    const size_t close = spec.find(']');
    if (close == std::string_view::npos) return false;
    host = std::string(spec.substr(1, close - 1));
    std::string_view rest = spec.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':' || !parsePort(rest.substr(1), &port)) return false;
    }
  } else {
    const size_t colon = spec.find(':');
    if (colon != std::string_view::npos && spec.find(':', colon + 1) == std::string_view::npos) {
      host = std::string(spec.substr(0, colon));
      if (!parsePort(spec.substr(colon + 1), &port)) return false;
    } else {
      host = std::string(spec);  // IPv4, or a bare IPv6 address
    }
  }
  return resolveNumeric(host, port, out);
}

bool isLoopback(const Upstream& u) {
  if (u.addr.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&u.addr);
    return (ntohl(a->sin_addr.s_addr) >> 24) == 127;
  }
  if (u.addr.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&u.addr);
    if (IN6_IS_ADDR_LOOPBACK(&a->sin6_addr)) return true;
    return IN6_IS_ADDR_V4MAPPED(&a->sin6_addr) && a->sin6_addr.s6_addr[12] == 127;
  }
  return false;
}

ResolvConf parseResolvConf(std::string_view text) {
  ResolvConf conf;
  std::istringstream lines{std::string(text)};
  std::string line;
  while (std::getline(lines, line)) {
    const size_t comment = line.find_first_of("#;");
    if (comment != std::string::npos) line.resize(comment);
    std::istringstream words(line);
    std::string keyword, address;
    if (!(words >> keyword) || keyword != "nameserver" || !(words >> address)) continue;
    Upstream u;
    if (!resolveNumeric(address, 53, &u) || isLoopback(u)) {
      conf.skipped.push_back(address);
      continue;
    }
    conf.upstreams.push_back(std::move(u));
  }
  return conf;
}

Status readResolvConf(const std::string& path, ResolvConf* out) {
  std::ifstream in(path);
  if (!in) {
    return Status::error("dns: cannot read " + path + ": " +
                         std::error_code(errno, std::generic_category()).message());
  }
  std::ostringstream text;
  text << in.rdbuf();
  *out = parseResolvConf(text.str());
  return Status::ok();
}

}  // namespace shoal::overlay::dns
