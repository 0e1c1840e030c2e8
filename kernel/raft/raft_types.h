#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace shoal::raft {

using NodeId = uint64_t;  // Raft member id; 0 means "none". Never reused.
using Term = uint64_t;
using Index = uint64_t;

inline constexpr NodeId kNone = 0;

enum class EntryType : uint8_t {
  kNormal = 0,      // a state-machine command (a store transaction); empty data = leader no-op
  kConfChange = 1,  // a membership change (data: ConfChange::encode()), effective on commit
};

// One single-server membership change (Raft dissertation §4.1): only one may be in flight.
// It carries the whole resulting membership, not just the delta, so a member that joined with
// no configuration learns all of it from the first change it applies.
struct ConfChange {
  enum class Type : uint8_t { kAddVoter = 0, kRemoveVoter = 1, kAddLearner = 2 };
  Type type = Type::kAddVoter;
  NodeId node = 0;
  std::vector<NodeId> voters;    // after the change
  std::vector<NodeId> learners;  // after the change

  std::string encode() const;
  static std::optional<ConfChange> decode(const std::string& data);
};

struct Entry {
  Term term = 0;
  Index index = 0;
  EntryType type = EntryType::kNormal;
  std::string data;

  bool operator==(const Entry& o) const {
    return term == o.term && index == o.index && type == o.type && data == o.data;
  }
};

// What must be on stable storage before any message of the same Ready leaves the node.
struct HardState {
  Term term = 0;
  NodeId vote = kNone;
  Index commit = 0;

  bool operator==(const HardState& o) const {
    return term == o.term && vote == o.vote && commit == o.commit;
  }
  bool operator!=(const HardState& o) const { return !(*this == o); }
};

// A state-machine snapshot covering every entry up to `index` (whose term is `term`), and the
// membership at that point. `data` is the state machine's own encoding.
struct Snapshot {
  Index index = 0;
  Term term = 0;
  std::vector<NodeId> voters;
  std::vector<NodeId> learners;
  std::string data;

  bool empty() const { return index == 0; }
};

enum class MessageType : uint8_t {
  kPreVote,  // "would you vote for me at term+1?" (does not disturb anyone's term)
  kPreVoteResp,
  kVote,
  kVoteResp,
  kAppend,  // AppendEntries (also carries the leader's commit index)
  kAppendResp,
  kHeartbeat,  // empty AppendEntries: leadership and commit, nothing to append
  kHeartbeatResp,
  kTimeoutNow,  // leadership transfer: "campaign now, you are up to date"
  kPropose,     // a follower forwards client proposals (entries) to the leader; term-less
  kSnapshot,    // InstallSnapshot: the follower is behind the leader's compacted log
  // A member that cannot take a forwarded proposal (it knows no leader, or it leads and is
  // handing over) sends its entries back: the proposer learns that nobody appended them.
  kProposeDropped,
};

const char* messageTypeName(MessageType type);

struct Message {
  MessageType type = MessageType::kAppend;
  NodeId from = kNone;
  NodeId to = kNone;
  Term term = 0;
  // kAppend: the entry before `entries`; kVote/kPreVote: the candidate's last entry;
  // kAppendResp: the follower's last matching index (or, when rejecting, the probed index).
  Term logTerm = 0;
  Index index = 0;
  std::vector<Entry> entries;
  Index commit = 0;
  bool reject = false;
  Index rejectHint = 0;  // kAppendResp with reject: the follower's last index
  Snapshot snapshot;     // kSnapshot
  // kHeartbeat/kHeartbeatResp: a read-index round; kVote/kPreVote: 1 when the campaign is a
  // leadership transfer (it may interrupt a leader's lease).
  uint64_t context = 0;
};

// Role, for observers.
enum class Role : uint8_t { kFollower, kPreCandidate, kCandidate, kLeader };
const char* roleName(Role role);

// A linearizable read the leader has confirmed: serve it once `index` is applied.
struct ReadState {
  uint64_t id = 0;
  Index index = 0;
};

// Everything the core wants done, in this order: persist `hardState` and `entries` (durably),
// then send `messages`, then apply `committed` to the state machine, then call advance().
struct Ready {
  std::optional<HardState> hardState;  // set when it changed
  // A snapshot received from the leader: persist it (it replaces every entry up to its index),
  // and restore the state machine from it before applying `committed`.
  std::optional<Snapshot> snapshot;
  std::vector<Entry> entries;  // to append; the first one's index is where to truncate
  std::vector<Message> messages;
  std::vector<Entry> committed;  // in order, each exactly once
  // Reads confirmed by read-index: each may be served once the state machine has applied
  // `index`.
  std::vector<ReadState> reads;

  bool empty() const {
    return !hardState && !snapshot && entries.empty() && messages.empty() && committed.empty() &&
           reads.empty();
  }
};

}  // namespace shoal::raft
