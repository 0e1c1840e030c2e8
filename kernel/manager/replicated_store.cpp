#include "kernel/manager/replicated_store.h"

#include <algorithm>
#include <thread>
#include <utility>

namespace shoal::manager {
namespace {

// Bumped if the header ever changes; an entry of another format is refused, never guessed at.
constexpr char kCommandFormat = 1;
constexpr std::size_t kHeaderSize = 1 + 8;

Status notACommand(raft::Index index) {
  return Status::invalidArgument("raft entry " + std::to_string(index) +
                                 " is not a store command of format " +
                                 std::to_string(kCommandFormat));
}

int64_t timeOf(std::string_view command) {
  uint64_t t = 0;
  for (std::size_t i = 1; i < kHeaderSize; ++i) {
    t = (t << 8) | static_cast<unsigned char>(command[i]);
  }
  return static_cast<int64_t>(t);
}

}  // namespace

std::string encodeStoreCommand(int64_t timeNs, std::string_view encodedChanges) {
  std::string out;
  out.reserve(kHeaderSize + encodedChanges.size());
  out.push_back(kCommandFormat);
  const auto t = static_cast<uint64_t>(timeNs);
  for (int i = 7; i >= 0; --i) out.push_back(static_cast<char>((t >> (8 * i)) & 0xff));
  out.append(encodedChanges);
  return out;
}

Status StoreStateMachine::apply(raft::Index index, std::string_view command) {
  if (command.size() < kHeaderSize || command[0] != kCommandFormat) {
    // Consume the index as the store does for any refused change, so every replica's version
    // stays equal to the others'.
    (void)store_.apply(index, 0, store::ChangeSet{});
    return notACommand(index);
  }
  return store_.applyEncoded(index, timeOf(command), command.substr(kHeaderSize));
}

std::vector<Status> StoreStateMachine::applyGroup(raft::Index index,
                                                  const std::vector<std::string_view>& commands) {
  std::vector<Status> out(commands.size());
  std::vector<store::MemoryStore::EncodedChange> group;
  std::vector<std::size_t> slots;  // out[] position of each group member
  for (std::size_t i = 0; i < commands.size(); ++i) {
    std::string_view c = commands[i];
    if (c.size() < kHeaderSize || c[0] != kCommandFormat) {
      out[i] = notACommand(index);
      continue;
    }
    group.push_back({timeOf(c), c.substr(kHeaderSize)});
    slots.push_back(i);
  }
  std::vector<Status> applied = store_.applyGroup(index, group);
  for (std::size_t k = 0; k < slots.size(); ++k) out[slots[k]] = std::move(applied[k]);
  return out;
}

Result<std::string> StoreStateMachine::snapshot() { return store_.snapshot(); }

Status StoreStateMachine::restore(raft::Index index, std::string_view data) {
  if (Status s = store_.restore(data); !s) {
    return s.withContext("restoring the store from the snapshot at raft index " +
                         std::to_string(index));
  }
  ++restores_;
  return Status::ok();
}

ReplicatedStore::ReplicatedStore(ReplicatedStoreOptions options,
                                 std::unique_ptr<raft::RaftStorage> storage,
                                 raft::Transport& transport, Random& random, const Clock& clock)
    : store_(options.limits),
      machine_(store_),
      clock_(clock),
      node_(std::make_unique<raft::RaftNode>(options.raft, std::move(storage), transport, machine_,
                                             random)) {}

ReplicatedStore::~ReplicatedStore() { stop(); }

Status ReplicatedStore::start() { return node_->start(); }

void ReplicatedStore::stop() { node_->stop(); }

Status ReplicatedStore::explain(Status s) const {
  if (s.isOk()) return s;
  const auto code = s.code();
  if (code == Status::Code::kUnavailable && node_->leader() == raft::kNone) {
    return Status::unavailable("no quorum: this manager cannot reach a majority of the " +
                               std::to_string(node_->voters().size()) +
                               " managers and knows no leader; nothing was written");
  }
  return s;
}

void ReplicatedStore::awaitLeader(std::chrono::milliseconds timeout) const {
  // An election in progress (a manager that just started, a leader that just died) is not
  // worth an error: wait for one to finish, up to an election's worth of time.
  const auto limit = std::min<std::chrono::milliseconds>(timeout, kElectionWait);
  const auto until = std::chrono::steady_clock::now() + limit;
  while (node_->leader() == raft::kNone && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

Status ReplicatedStore::update(const store::Store::TxFn& fn, std::chrono::milliseconds timeout) {
  awaitLeader(timeout);
  auto changes = store_.prepare(fn);
  if (!changes) return changes.status();
  if (changes->empty()) return Status::ok();
  std::string command = encodeStoreCommand(clock_.nowNanos(), store::encodeChangeSet(*changes));
  return explain(node_->propose(std::move(command), timeout));
}

Status ReplicatedStore::linearizableView(const store::Store::ViewFn& fn,
                                         std::chrono::milliseconds timeout) {
  awaitLeader(timeout);
  if (Status s = node_->readBarrier(timeout); !s) return explain(s);
  store_.view(fn);
  return Status::ok();
}

}  // namespace shoal::manager
