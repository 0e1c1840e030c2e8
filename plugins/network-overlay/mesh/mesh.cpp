#include "mesh/mesh.hpp"

#include <fcntl.h>
#include <nftables/libnftables.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "lb/command.hpp"
#include "lb/conntrack.hpp"
#include "lb/ruleset.hpp"

extern char** environ;

namespace shoal::overlay::mesh {
namespace {

using lb::formatIpv4;

constexpr std::chrono::seconds kCommandLimit(10);

// nft contexts of this library are used one at a time (libnftables does not promise more).
std::mutex& nftMutex() {
  static std::mutex mutex;
  return mutex;
}

std::string trimmed(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

std::string firstLine(const std::string& text) {
  std::string line = text.substr(0, text.find('\n'));
  return line.empty() ? "no message" : line;
}

// Runs `fn()` (returning Status) on a new thread inside the namespace `fd` and waits for it;
// the thread ends there instead of coming back.
template <class F>
Status inNamespace(int fd, F&& fn) {
  Status result;
  std::thread worker([&] {
    if (::setns(fd, CLONE_NEWNET) != 0) {
      result = Status::error(std::string("setns: ") + std::strerror(errno));
      return;
    }
    try {
      result = fn();
    } catch (const std::exception& e) {
      result = Status::error(e.what());
    } catch (...) {
      result = Status::error("unknown exception");
    }
  });
  worker.join();
  return result;
}

class OwnedFd {
 public:
  explicit OwnedFd(int fd = -1) : fd_(fd) {}
  ~OwnedFd() {
    if (fd_ >= 0) ::close(fd_);
  }
  OwnedFd(const OwnedFd&) = delete;
  OwnedFd& operator=(const OwnedFd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

// On a thread inside the namespace: one transaction through a context made here.
Status runNft(const std::string& commands) {
  std::lock_guard<std::mutex> lock(nftMutex());
  nft_ctx* ctx = nft_ctx_new(NFT_CTX_DEFAULT);
  if (ctx == nullptr) return Status::error("nft_ctx_new failed");
  nft_ctx_buffer_output(ctx);
  nft_ctx_buffer_error(ctx);
  const int rc = nft_run_cmd_from_buffer(ctx, commands.c_str());
  const std::string errors = trimmed(nft_ctx_get_error_buffer(ctx));
  nft_ctx_free(ctx);
  if (rc != 0) return Status::error("nft: " + (errors.empty() ? "failed" : errors));
  return Status::ok();
}

// On a thread inside the namespace: writes "1" to /proc/sys/net/... (per network namespace,
// resolved for the writing thread).
Status sysctlOn(const std::string& key) {
  const std::string path = "/proc/sys/net/" + key;
  const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return Status::error("open " + path + ": " + std::strerror(errno));
  const ssize_t n = ::write(fd, "1\n", 2);
  const int saved = errno;
  ::close(fd);
  if (n != 2) return Status::error("write " + path + ": " + std::strerror(saved));
  return Status::ok();
}

struct Commands {
  std::string ip;
  Status run(std::vector<std::string> args, bool* failedQuietly = nullptr) const {
    args.insert(args.begin(), ip);
    const CommandResult r = runCommand(args, kCommandLimit);
    std::string text;
    for (size_t i = 1; i < args.size(); ++i) text += (i > 1 ? " " : "") + args[i];
    if (!r.failure.empty()) return Status::error("ip " + text + ": " + r.failure);
    if (r.exitCode != 0) {
      if (failedQuietly != nullptr) {
        *failedQuietly = true;
        return Status::ok();
      }
      return Status::error("ip " + text + ": " + firstLine(trimmed(r.err)));
    }
    return Status::ok();
  }
  // True when the link exists in the calling thread's namespace.
  Status linkExists(const std::string& name, bool* exists) const {
    bool missing = false;
    Status s = run({"-o", "link", "show", "dev", name}, &missing);
    *exists = s && !missing;
    return s;
  }
};

Status chain(std::initializer_list<Status> steps) {
  for (const Status& s : steps) {
    if (!s) return s;
  }
  return Status::ok();
}

std::set<uint32_t> backendsOf(const std::vector<PublishedPort>& ports) {
  std::set<uint32_t> out;
  for (const PublishedPort& p : ports) out.insert(p.backends.begin(), p.backends.end());
  return out;
}

}  // namespace

struct Mesh::Impl {
  Log log;
  OwnedFd home{::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)};
  std::vector<PublishedPort> applied;
  bool sweepPending = true;  // what conntrack holds is unknown (first apply, failed sweep)
  dev_t sandboxDev = 0;      // the sandbox the veth was last plumbed into
  ino_t sandboxIno = 0;

  void note(const std::string& message) {
    if (log) log(message);
  }
};

Mesh::Mesh(Log log) : impl_(std::make_unique<Impl>()) { impl_->log = std::move(log); }
Mesh::~Mesh() = default;

std::vector<PublishedPort> Mesh::applied() const { return impl_->applied; }

Status Mesh::apply(const std::string& sandboxNetns, const std::vector<PublishedPort>& list) {
  try {
    if (impl_->home.get() < 0) return Status::error("mesh: cannot open the host namespace");
    const std::vector<PublishedPort> ports = normalizePorts(list);
    const Commands ip{findProgram("ip")};
    if (ip.ip.empty()) return Status::error("mesh: no `ip` program (iproute2)");
    const OwnedFd sb(::open(sandboxNetns.c_str(), O_RDONLY | O_CLOEXEC));
    struct stat st {};
    if (sb.get() < 0 || ::fstat(sb.get(), &st) != 0) {
      return Status::error("mesh: cannot open the ingress sandbox " + sandboxNetns + ": " +
                           std::strerror(errno));
    }
    const bool newSandbox = st.st_dev != impl_->sandboxDev || st.st_ino != impl_->sandboxIno;
    const std::string host(kHostVeth);
    const std::string peer(kSandboxVeth);
    const std::string hostCidr = formatIpv4(kHostAddress) + "/" + std::to_string(kVethPrefix);
    const std::string sbCidr = formatIpv4(kSandboxAddress) + "/" + std::to_string(kVethPrefix);

    // 1. The veth and its addresses, checked once per sandbox (and again after a failure).
    if (newSandbox) {
      bool inSandbox = false;
      bool inHost = false;
      Status s = inNamespace(sb.get(), [&] { return ip.linkExists(peer, &inSandbox); });
      if (s) s = inNamespace(impl_->home.get(), [&] { return ip.linkExists(host, &inHost); });
      // Half a pair (a sandbox remade under a surviving host end, or the reverse): remade.
      if (s && inHost && !inSandbox) {
        s = inNamespace(impl_->home.get(), [&] { return ip.run({"link", "del", "dev", host}); });
        inHost = false;
      }
      if (s && inSandbox && !inHost) {
        s = inNamespace(sb.get(), [&] { return ip.run({"link", "del", "dev", peer}); });
        inSandbox = false;
      }
      if (s && !inHost) {
        s = inNamespace(impl_->home.get(), [&] {
          return ip.run(
              {"link", "add", host, "type", "veth", "peer", "name", peer, "netns", sandboxNetns});
        });
      }
      if (s) {
        s = inNamespace(impl_->home.get(), [&] {
          return chain({ip.run({"addr", "replace", hostCidr, "dev", host}),
                        ip.run({"link", "set", "dev", host, "up"}), sysctlOn("ipv4/ip_forward"),
                        sysctlOn("ipv4/conf/lo/route_localnet"),
                        sysctlOn("ipv4/conf/" + host + "/route_localnet")});
        });
      }
      if (s) {
        s = inNamespace(sb.get(), [&] {
          return chain({ip.run({"addr", "replace", sbCidr, "dev", peer}),
                        ip.run({"link", "set", "dev", peer, "up"}),
                        ip.run({"route", "replace", "default", "via", formatIpv4(kHostAddress),
                                "dev", peer}),
                        sysctlOn("ipv4/ip_forward")});
        });
      }
      if (!s) return Status::error("mesh: veth " + host + "/" + peer + ": " + s.message());
      impl_->sandboxDev = st.st_dev;
      impl_->sandboxIno = st.st_ino;
      impl_->sweepPending = true;
    }

    // 2. The tables: the sandbox's first, so a port never leads to a sandbox without rules.
    Status s = inNamespace(sb.get(), [&] { return runNft(renderSandboxRuleset(ports)); });
    if (!s) return Status::error("mesh: ingress sandbox: " + s.message());
    s = inNamespace(impl_->home.get(), [&] { return runNft(renderHostRuleset(ports)); });
    if (!s) return Status::error("mesh: host namespace: " + s.message());

    // 3. Flows to backends no port has any more (the sandbox sees them sent to .2).
    const std::set<uint32_t> before = backendsOf(impl_->applied);
    const std::set<uint32_t> now = backendsOf(ports);
    const bool removed = !std::includes(now.begin(), now.end(), before.begin(), before.end());
    impl_->applied = ports;
    if (removed || impl_->sweepPending) {
      const std::string conntrack = lb::findConntrack();
      lb::VipTable current;
      current[kSandboxAddress] = std::vector<uint32_t>(now.begin(), now.end());
      size_t deleted = 0;
      s = inNamespace(sb.get(), [&] {
        return lb::deleteStaleFlows(conntrack, {kSandboxAddress}, current, &deleted);
      });
      if (!s) {
        impl_->sweepPending = true;
        return Status::error("mesh: rules applied, but stale flows remain: " + s.message());
      }
      impl_->sweepPending = false;
      if (deleted > 0) {
        impl_->note("mesh: deleted the conntrack entries of " + std::to_string(deleted) +
                    " stale backend(s)");
      }
    }
    return Status::ok();
  } catch (const std::exception& e) {
    return Status::error(std::string("mesh: ") + e.what());
  }
}

Status Mesh::remove(const std::string& sandboxNetns) {
  try {
    if (impl_->home.get() < 0) return Status::error("mesh: cannot open the host namespace");
    const Commands ip{findProgram("ip")};
    if (ip.ip.empty()) return Status::error("mesh: no `ip` program (iproute2)");
    const std::string host(kHostVeth);
    const std::string conntrack = lb::findConntrack();
    Status s = inNamespace(impl_->home.get(), [&]() -> Status {
      Status r = runNft(renderRemoval());
      if (!r) return r;
      bool exists = false;
      r = ip.linkExists(host, &exists);
      if (r && exists) r = ip.run({"link", "del", "dev", host});
      if (!r) return r;
      // The host's flows DNATed to the sandbox would otherwise outlive it.
      if (!conntrack.empty()) {
        const CommandResult ct = runCommand(
            {conntrack, "-D", "-f", "ipv4", "-r", formatIpv4(kSandboxAddress)}, kCommandLimit);
        if (!ct.failure.empty()) return Status::error("conntrack -D: " + ct.failure);
      }
      return Status::ok();
    });
    if (!s) return Status::error("mesh: host namespace: " + s.message());
    impl_->applied.clear();
    impl_->sandboxDev = 0;
    impl_->sandboxIno = 0;
    impl_->sweepPending = true;
    if (sandboxNetns.empty()) return Status::ok();
    const OwnedFd sb(::open(sandboxNetns.c_str(), O_RDONLY | O_CLOEXEC));
    if (sb.get() < 0) return Status::ok();  // gone with its table
    s = inNamespace(sb.get(), [&] { return runNft(renderRemoval()); });
    // Not a namespace (EINVAL from setns): nothing of ours is there.
    if (!s && s.message().rfind("setns:", 0) != 0) {
      return Status::error("mesh: ingress sandbox: " + s.message());
    }
    return Status::ok();
  } catch (const std::exception& e) {
    return Status::error(std::string("mesh: ") + e.what());
  }
}

}  // namespace shoal::overlay::mesh
