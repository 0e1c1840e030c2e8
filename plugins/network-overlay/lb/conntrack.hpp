// Stale connection tracking entries of a task namespace: when a backend leaves a VIP (or a VIP
// goes away), the flows NATed to it would otherwise carry on (conntrack keeps a flow's DNAT
// choice for its lifetime, the rules are only read for a flow's first packet). Deleting them
// makes the flow's next packet a new flow: TCP then gets a reset from whichever backend it now
// reaches, UDP moves to a live backend.
//
// Done with the `conntrack` program (conntrack-tools): the machine's libnetfilter_conntrack has
// no pkg-config file, and the program is what operators use to look at the same entries.
#pragma once

#include <chrono>
#include <cstdint>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "lb/ruleset.hpp"
#include "lb/status.hpp"

namespace shoal::overlay::lb {

// One entry of `conntrack -L -f ipv4`: where it was sent and who answers (the backend when it
// was DNATed, the original destination when it was not).
struct Flow {
  uint32_t origDst = 0;
  uint32_t replySrc = 0;
};

// The entries of a `conntrack -L -f ipv4` listing (its default text format); lines it cannot
// read are skipped.
std::vector<Flow> parseConntrackListing(const std::string& text);

// The (VIP, answering address) pairs to delete, sorted and unique: flows sent to a VIP in
// `watched` whose answering address is not one of that VIP's backends in `current` (a VIP
// missing from `current` has none).
std::vector<std::pair<uint32_t, uint32_t>> staleFlowPairs(const std::vector<Flow>& flows,
                                                          const std::set<uint32_t>& watched,
                                                          const VipTable& current);

// The conntrack program: the first executable `conntrack` on PATH, else in /usr/sbin or /sbin
// (a daemon's PATH often lacks the sbin directories). Empty when there is none.
std::string findConntrack();

// Lists the entries of the CALLING THREAD's network namespace and deletes the stale ones
// (staleFlowPairs), one `conntrack -D -d VIP -r ADDR` per pair. The programs are spawned from
// the calling thread, so they run in its network namespace. *deleted counts the pairs deleted.
// Errors: "conntrack: ..." naming the command and its message (not found, timed out, exit
// status other than 0 or, for -D, 1 = nothing left to delete).
Status deleteStaleFlows(const std::string& conntrackPath, const std::set<uint32_t>& watched,
                        const VipTable& current, size_t* deleted,
                        std::chrono::milliseconds limit = std::chrono::seconds(10));

}  // namespace shoal::overlay::lb
