#include "dataplane/tunnel.hpp"

#include <shoal/plugin.hpp>

#include <Poco/Base64Decoder.h>
#include <fcntl.h>
#include <nftables/libnftables.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <memory>
#include <sstream>
#include <vector>

#include "dataplane/documents.hpp"

extern char** environ;

namespace shoal::overlay::dataplane {
namespace {

using sdk::Error;

constexpr char kProgram[] = "wireguard-go";
constexpr char kSocketDir[] = "/var/run/wireguard";

std::string hex(const WireguardKey& key) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (uint8_t b : key) {
    out += kDigits[b >> 4];
    out += kDigits[b & 15];
  }
  return out;
}

// The path of `program` on PATH, or "".
std::string onPath(const std::string& program) {
  const char* path = std::getenv("PATH");
  std::istringstream dirs(path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    if (dir.empty()) continue;
    const std::string candidate = dir + "/" + program;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

struct Closer {
  int fd;
  ~Closer() {
    if (fd >= 0) ::close(fd);
  }
};

// One UAPI request (`set=1` and its lines) and wireguard-go's errno answer.
void uapiSet(const std::string& ifname, const std::string& body) {
  const std::string path = std::string(kSocketDir) + "/" + ifname + ".sock";
  const std::string context = "configure " + ifname + " through " + path;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) throw Error(SHOAL_EIO, context + ": path too long");
  std::memcpy(addr.sun_path, path.c_str(), path.size());
  Closer s{::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)};
  if (s.fd < 0) throw Error(SHOAL_EIO, context + ": socket: " + std::strerror(errno));
  if (::connect(s.fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    throw Error(SHOAL_EIO, context + ": " + std::strerror(errno));
  }
  const std::string request = "set=1\n" + body + "\n";
  for (std::size_t sent = 0; sent < request.size();) {
    const ssize_t n = ::send(s.fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw Error(SHOAL_EIO, context + ": send: " + std::strerror(errno));
    sent += static_cast<std::size_t>(n);
  }
  std::string answer;
  char buf[256];
  while (answer.find("\n\n") == std::string::npos) {
    const ssize_t n = ::recv(s.fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    answer.append(buf, static_cast<std::size_t>(n));
  }
  if (answer.rfind("errno=0\n", 0) != 0) {
    const std::string shown = answer.substr(0, answer.find('\n'));
    throw Error(SHOAL_EIO, context + ": wireguard-go answered \"" +
                               (shown.empty() ? std::string("nothing") : shown) + "\"");
  }
}

std::string peerLines(int port, uint32_t nodeAddr, const TunnelSpec::Node& n) {
  return "public_key=" + hex(n.publicKey) + "\nendpoint=" + formatIpv4(nodeAddr) + ":" +
         std::to_string(port) + "\nreplace_allowed_ips=true\nallowed_ip=" + formatIpv4(n.address) +
         "/32\n";
}

}  // namespace

bool parseWireguardKey(std::string_view text, WireguardKey* out) {
  if (text.size() != 44 || text[43] != '=' || text[42] == '=') return false;
  for (std::size_t i = 0; i < 43; ++i) {
    const char c = text[i];
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '+' && c != '/') return false;
  }
  std::istringstream in{std::string(text)};
  Poco::Base64Decoder decoder(in);
  std::string bytes((std::istreambuf_iterator<char>(decoder)), std::istreambuf_iterator<char>());
  if (bytes.size() != out->size()) return false;
  std::memcpy(out->data(), bytes.data(), out->size());
  return true;
}

std::string wireguardUnavailable() {
  if (onPath(kProgram).empty()) {
    return "wireguard-go is not on PATH (Debian's package wireguard-go; this kernel has no "
           "WireGuard or IPsec of its own)";
  }
  struct stat st {};
  if (::stat("/dev/net/tun", &st) != 0 || !S_ISCHR(st.st_mode)) {
    return "/dev/net/tun is missing, and wireguard-go needs a TUN device";
  }
  return "";
}

std::string interfaceName(const std::string& seed) {
  uint32_t h = 2166136261u;  // FNV-1a
  for (unsigned char c : seed) {
    h ^= c;
    h *= 16777619u;
  }
  char buf[16];
  std::snprintf(buf, sizeof buf, "swg%08x", h);
  return buf;
}

void startWireguard(const std::string& ifname) {
  if (const std::string why = wireguardUnavailable(); !why.empty()) {
    throw Error(SHOAL_ENOTSUP, "cannot start the encrypted overlays' tunnel: " + why);
  }
  const std::string context = "start " + std::string(kProgram) + " " + ifname;
  // Its own output goes to a file the error can quote: the daemon it leaves behind keeps the
  // same descriptors, so a pipe would never see its end.
  char logPath[] = "/tmp/shoal-wireguard-XXXXXX";
  Closer log{::mkstemp(logPath)};
  if (log.fd < 0) throw Error(SHOAL_EIO, context + ": mkstemp: " + std::strerror(errno));
  ::unlink(logPath);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, log.fd, 1);
  posix_spawn_file_actions_adddup2(&actions, log.fd, 2);
  std::vector<std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    if (std::strncmp(*e, "WG_", 3) != 0 && std::strncmp(*e, "LOG_LEVEL=", 10) != 0) {
      env.emplace_back(*e);
    }
  }
  env.emplace_back("LOG_LEVEL=error");
  std::vector<char*> envp;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::string program = kProgram, name = ifname;
  char* argv[] = {program.data(), name.data(), nullptr};
  pid_t pid = 0;
  const int rc = ::posix_spawnp(&pid, kProgram, &actions, nullptr, argv, envp.data());
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) throw Error(SHOAL_EIO, context + ": " + std::strerror(rc));
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throw Error(SHOAL_EIO, context + ": waitpid: " + std::strerror(errno));
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return;
  // The last line it wrote says why (the banner it prints first does not).
  std::string output, line, last;
  char buf[4096];
  ssize_t n = ::pread(log.fd, buf, sizeof buf, 0);
  if (n > 0) output.assign(buf, static_cast<std::size_t>(n));
  std::istringstream lines(output);
  while (std::getline(lines, line)) {
    if (!line.empty() && line.find("│") == std::string::npos && line.find("─") == std::string::npos)
      last = line;
  }
  throw Error(SHOAL_EIO, context + " failed (" +
                             (WIFEXITED(status) ? "exit " + std::to_string(WEXITSTATUS(status))
                                                : "signal " + std::to_string(WTERMSIG(status))) +
                             (last.empty() ? std::string() : ": " + last) + ")");
}

void configureWireguard(const std::string& ifname, int port, const TunnelSpec& want,
                        const TunnelSpec* have) {
  std::string body;
  if (have == nullptr || have->privateKey != want.privateKey) {
    body += "private_key=" + hex(want.privateKey) + "\n";
  }
  body += "listen_port=" + std::to_string(port) + "\n";
  if (have == nullptr) {
    body += "replace_peers=true\n";
    for (const auto& [nodeAddr, n] : want.nodes) body += peerLines(port, nodeAddr, n);
  } else {
    // Peers keyed by their public key: a node whose key rotated is removed and added anew;
    // one whose key and addresses are unchanged is not touched (its session stays up).
    std::map<WireguardKey, std::pair<uint32_t, TunnelSpec::Node>> old, next;
    for (const auto& [a, n] : have->nodes) old[n.publicKey] = {a, n};
    for (const auto& [a, n] : want.nodes) next[n.publicKey] = {a, n};
    for (const auto& [key, entry] : old) {
      if (!next.count(key)) body += "public_key=" + hex(key) + "\nremove=true\n";
    }
    for (const auto& [key, entry] : next) {
      auto it = old.find(key);
      if (it == old.end() || it->second != entry) {
        body += peerLines(port, entry.first, entry.second);
      }
    }
  }
  uapiSet(ifname, body);
}

std::string renderTunnelFilter(const std::string& ifname, int vxlanPort,
                               const std::vector<uint32_t>& vnis) {
  std::string out = "table inet shoal_tunnel {}\ndelete table inet shoal_tunnel\n";
  if (vnis.empty()) return out;
  // The VNI is the 24 bits after the UDP header (8 bytes) and VXLAN's flags word (4 bytes).
  out +=
      "table inet shoal_tunnel {\n  chain input {\n    type filter hook input priority -200; "
      "policy accept;\n    iifname != \"" +
      ifname + "\" udp dport " + std::to_string(vxlanPort) + " @th,96,24 { ";
  for (std::size_t i = 0; i < vnis.size(); ++i) {
    out += (i == 0 ? "" : ", ") + std::to_string(vnis[i]);
  }
  return out + " } drop\n  }\n}\n";
}

void runNft(const std::string& batch) {
  std::unique_ptr<nft_ctx, decltype(&nft_ctx_free)> ctx(nft_ctx_new(NFT_CTX_DEFAULT),
                                                        &nft_ctx_free);
  if (!ctx) throw Error(SHOAL_EIO, "nft_ctx_new failed");
  nft_ctx_buffer_output(ctx.get());
  nft_ctx_buffer_error(ctx.get());
  const int rc = nft_run_cmd_from_buffer(ctx.get(), batch.c_str());
  std::string errors = nft_ctx_get_error_buffer(ctx.get());
  while (!errors.empty() && (errors.back() == '\n' || errors.back() == ' ')) errors.pop_back();
  if (rc != 0) {
    throw Error(SHOAL_EIO, "nftables refused the tunnel filter: " +
                               (errors.empty() ? std::string("no message") : errors));
  }
}

}  // namespace shoal::overlay::dataplane
