#include "lb/conntrack.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <sstream>

extern char** environ;

namespace shoal::overlay::lb {
namespace {

struct CommandResult {
  int exitCode = -1;
  std::string out;
  std::string err;
  std::string failure;  // set when the command could not be run to completion
};

void closeFd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

// Runs `argv` (argv[0] a path) to completion from the calling thread, so in its namespaces.
// posix_spawn rather than fork: the daemon is multithreaded and may be large.
CommandResult runCommand(const std::vector<std::string>& argv, std::chrono::milliseconds limit) {
  CommandResult result;
  int out[2] = {-1, -1};
  int err[2] = {-1, -1};
  if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) {
    result.failure = std::string("pipe: ") + std::strerror(errno);
    closeFd(out[0]), closeFd(out[1]), closeFd(err[0]), closeFd(err[1]);
    return result;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, out[1], 1);
  posix_spawn_file_actions_adddup2(&actions, err[1], 2);
  // The child must not inherit the daemon's signal mask or ignored signals (SIGPIPE).
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none;
  sigset_t all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  const int spawned = ::posix_spawn(&pid, args[0], &actions, &attr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  closeFd(out[1]);
  closeFd(err[1]);
  if (spawned != 0) {
    result.failure = std::string("cannot run ") + argv[0] + ": " + std::strerror(spawned);
    closeFd(out[0]), closeFd(err[0]);
    return result;
  }

  const auto deadline = std::chrono::steady_clock::now() + limit;
  bool timedOut = false;
  while (out[0] >= 0 || err[0] >= 0) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timedOut = true;
      break;
    }
    pollfd fds[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
    const int n = ::poll(fds, 2, static_cast<int>(left.count()));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    char buf[65536];
    for (int i = 0; i < 2; ++i) {
      int& fd = i == 0 ? out[0] : err[0];
      if (fd < 0 || fds[i].revents == 0) continue;
      const ssize_t got = ::read(fd, buf, sizeof buf);
      if (got > 0) {
        (i == 0 ? result.out : result.err).append(buf, static_cast<size_t>(got));
      } else if (got == 0 || errno != EINTR) {
        closeFd(fd);
      }
    }
  }
  closeFd(out[0]);
  closeFd(err[0]);
  if (timedOut) ::kill(pid, SIGKILL);
  int status = 0;
  pid_t waited;
  do {
    waited = ::waitpid(pid, &status, 0);
  } while (waited < 0 && errno == EINTR);
  if (timedOut) {
    result.failure = argv[0] + " timed out after " + std::to_string(limit.count()) + " ms";
  } else if (waited < 0) {
    // ECHILD: the host ignores SIGCHLD, so children are reaped for us and the status is lost;
    // what was printed is all there is to go by.
    if (errno != ECHILD) result.failure = std::string("waitpid: ") + std::strerror(errno);
    result.exitCode = 0;
  } else if (WIFEXITED(status)) {
    result.exitCode = WEXITSTATUS(status);
  } else {
    result.failure = argv[0] + " killed by signal " + std::to_string(WTERMSIG(status));
  }
  return result;
}

bool parseAddress(const std::string& text, uint32_t* out) {
  in_addr a{};
  if (::inet_pton(AF_INET, text.c_str(), &a) != 1) return false;
  *out = ntohl(a.s_addr);
  return true;
}

std::string firstLine(const std::string& text) {
  std::string line = text.substr(0, text.find('\n'));
  return line.empty() ? "no message" : line;
}

}  // namespace

std::vector<Flow> parseConntrackListing(const std::string& text) {
  std::vector<Flow> flows;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    // "tcp 6 117 TIME_WAIT src=A dst=VIP sport=.. dport=.. src=BACKEND dst=A sport=.. ...":
    // the first src/dst pair is the original direction, the second the reply.
    std::istringstream words(line);
    std::string word;
    int srcs = 0;
    int dsts = 0;
    Flow flow;
    bool haveDst = false;
    bool haveReply = false;
    while (words >> word) {
      if (word.rfind("dst=", 0) == 0 && dsts++ == 0) {
        haveDst = parseAddress(word.substr(4), &flow.origDst);
      } else if (word.rfind("src=", 0) == 0 && srcs++ == 1) {
        haveReply = parseAddress(word.substr(4), &flow.replySrc);
      }
    }
    if (haveDst && haveReply) flows.push_back(flow);
  }
  return flows;
}

std::vector<std::pair<uint32_t, uint32_t>> staleFlowPairs(const std::vector<Flow>& flows,
                                                          const std::set<uint32_t>& watched,
                                                          const VipTable& current) {
  std::vector<std::pair<uint32_t, uint32_t>> stale;
  for (const Flow& flow : flows) {
    if (watched.count(flow.origDst) == 0) continue;
    const auto it = current.find(flow.origDst);
    if (it != current.end() &&
        std::binary_search(it->second.begin(), it->second.end(), flow.replySrc)) {
      continue;
    }
    stale.emplace_back(flow.origDst, flow.replySrc);
  }
  std::sort(stale.begin(), stale.end());
  stale.erase(std::unique(stale.begin(), stale.end()), stale.end());
  return stale;
}

std::string findConntrack() {
  std::vector<std::string> dirs;
  if (const char* path = std::getenv("PATH")) {
    std::istringstream parts(path);
    std::string dir;
    while (std::getline(parts, dir, ':')) {
      if (!dir.empty()) dirs.push_back(dir);
    }
  }
  dirs.push_back("/usr/sbin");
  dirs.push_back("/sbin");
  for (const std::string& dir : dirs) {
    const std::string candidate = dir + "/conntrack";
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

Status deleteStaleFlows(const std::string& conntrackPath, const std::set<uint32_t>& watched,
                        const VipTable& current, size_t* deleted, std::chrono::milliseconds limit) {
  *deleted = 0;
  if (conntrackPath.empty()) {
    return Status::error("conntrack: no conntrack program (conntrack-tools) on PATH or in /sbin");
  }
  if (watched.empty()) return Status::ok();
  const CommandResult listing = runCommand({conntrackPath, "-L", "-f", "ipv4"}, limit);
  if (!listing.failure.empty()) return Status::error("conntrack -L: " + listing.failure);
  if (listing.exitCode != 0) {
    return Status::error("conntrack -L: exit status " + std::to_string(listing.exitCode) + ": " +
                         firstLine(listing.err));
  }
  for (const auto& [vip, answerer] :
       staleFlowPairs(parseConntrackListing(listing.out), watched, current)) {
    const CommandResult gone = runCommand(
        {conntrackPath, "-D", "-f", "ipv4", "-d", formatIpv4(vip), "-r", formatIpv4(answerer)},
        limit);
    if (!gone.failure.empty()) return Status::error("conntrack -D: " + gone.failure);
    // 1: "0 flow entries have been deleted", the flows ended since the listing.
    if (gone.exitCode != 0 && gone.exitCode != 1) {
      return Status::error("conntrack -D -d " + formatIpv4(vip) + " -r " + formatIpv4(answerer) +
                           ": exit status " + std::to_string(gone.exitCode) + ": " +
                           firstLine(gone.err));
    }
    ++*deleted;
  }
  return Status::ok();
}

}  // namespace shoal::overlay::lb
