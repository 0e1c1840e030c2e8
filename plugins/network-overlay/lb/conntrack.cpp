#include "lb/conntrack.hpp"

#include "lb/command.hpp"

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

std::string findConntrack() { return findProgram("conntrack"); }

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
