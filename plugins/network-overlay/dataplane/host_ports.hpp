// Ports published in host mode (`--publish mode=host,published=P,target=T`): only a node
// running a task of the service answers on P, and the task sees each client's own address.
//
// Each task with such ports gets a veth straight to the host namespace (no bridge, no
// overlay): "sh" + its sandbox veth name ("shv" + 12 hex digits) on the host side with the first
// address of a /30 "slot" of kHostPool, eth<N> (after its overlay interfaces) in the task with the
// second and the task's default route via the first. The host's `table ip shoal_hostports` DNATs P
// on the node's own addresses (`fib daddr type local`, 127.0.0.1 included) to the task's address
// and T, and masquerades only what must be: sources on 127.0.0.0/8 (a client on the node's
// loopback), and connections the task itself opens to anywhere but the host links. Replies to
// the DNATed connections leave the task by its default route, so the client's address is
// never rewritten: the trade-off against the routing mesh is that only nodes with a task
// answer, and one task per node (the scheduler keeps host ports apart). Packets from the
// links to 127.0.0.0/8 are dropped before routing: route_localnet must not open the node's
// loopback services to its tasks.
//
// THREAD: pure functions, except writeSysctl, which writes in the calling thread's namespace.
// ERRORS: writeSysctl throws shoal::sdk::Error(SHOAL_EIO).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "dataplane/documents.hpp"

namespace shoal::overlay::dataplane {

constexpr uint32_t kHostPool = 0xa9fea000;  // 169.254.160.0/19
constexpr int kHostPoolPrefix = 19;
constexpr int kHostSlots = 2048;  // /30 blocks in the pool: tasks with host ports per node

inline uint32_t hostSideAddress(int slot) {
  return kHostPool + 4u * static_cast<uint32_t>(slot) + 1;
}
inline uint32_t taskSideAddress(int slot) {
  return kHostPool + 4u * static_cast<uint32_t>(slot) + 2;
}

// One mapping of the host table: `port` of this node to `taskAddress`.
struct HostMapping {
  HostPort port;
  uint32_t taskAddress = 0;
};

// The nft batch that makes the calling namespace's `table ip shoal_hostports` map exactly
// `mappings` (replaced whole); with none, the batch deletes it (and succeeds when there is
// none).
std::string renderHostPortsRuleset(const std::vector<HostMapping>& mappings);

// Writes `value` to /proc/sys/net/<key> of the calling thread's namespace.
void writeSysctl(const std::string& key, const char* value);

}  // namespace shoal::overlay::dataplane
