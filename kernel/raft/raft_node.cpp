#include "kernel/raft/raft_node.h"

#include <cstring>
#include <optional>

#include "kernel/common/log.h"

namespace shoal::raft {
namespace {

// Every command travels wrapped: a tag byte, the proposing member and its request id, so the
// proposer recognises its own command when it is applied, wherever it was appended.
constexpr char kEnvelopeTag = 'S';
constexpr std::size_t kEnvelopeSize = 1 + 8 + 8;

void putU64(std::string& out, uint64_t v) {
  for (int i = 7; i >= 0; --i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint64_t getU64(std::string_view in, std::size_t at) {
  uint64_t v = 0;
  for (std::size_t i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(in[at + i]);
  return v;
}

void putU32(std::string& out, uint32_t v) {
  for (int i = 3; i >= 0; --i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint32_t getU32(std::string_view in, std::size_t at) {
  uint32_t v = 0;
  for (std::size_t i = 0; i < 4; ++i) v = (v << 8) | static_cast<unsigned char>(in[at + i]);
  return v;
}

// Several commands of one member in one entry: 'G', the member, a count, then each command's
// request id, length and bytes.
constexpr char kGroupTag = 'G';
constexpr std::size_t kGroupHeaderSize = 1 + 8 + 4;

std::string wrapGroup(NodeId origin, const std::vector<std::pair<uint64_t, std::string>>& unsent,
                      std::size_t from, std::size_t to) {
  std::size_t total = kGroupHeaderSize;
  for (std::size_t i = from; i < to; ++i) total += 8 + 4 + unsent[i].second.size();
  std::string out;
  out.reserve(total);
  out.push_back(kGroupTag);
  putU64(out, origin);
  putU32(out, static_cast<uint32_t>(to - from));
  for (std::size_t i = from; i < to; ++i) {
    putU64(out, unsent[i].first);
    putU32(out, static_cast<uint32_t>(unsent[i].second.size()));
    out.append(unsent[i].second);
  }
  return out;
}

// The (request, command) pairs of a group entry, or nothing when it is malformed.
std::optional<std::vector<std::pair<uint64_t, std::string_view>>> unwrapGroup(
    std::string_view data) {
  if (data.size() < kGroupHeaderSize || data[0] != kGroupTag) return std::nullopt;
  const uint32_t count = getU32(data, 9);
  std::vector<std::pair<uint64_t, std::string_view>> out;
  std::size_t at = kGroupHeaderSize;
  for (uint32_t i = 0; i < count; ++i) {
    if (data.size() - at < 12) return std::nullopt;
    const uint64_t request = getU64(data, at);
    const uint32_t len = getU32(data, at + 8);
    at += 12;
    if (data.size() - at < len) return std::nullopt;
    out.emplace_back(request, data.substr(at, len));
    at += len;
  }
  if (at != data.size()) return std::nullopt;
  return out;
}

std::string wrap(NodeId origin, uint64_t request, std::string_view command) {
  std::string out;
  out.reserve(kEnvelopeSize + command.size());
  out.push_back(kEnvelopeTag);
  putU64(out, origin);
  putU64(out, request);
  out.append(command);
  return out;
}

}  // namespace

std::vector<Status> StateMachine::applyGroup(Index index,
                                             const std::vector<std::string_view>& commands) {
  std::vector<Status> out;
  out.reserve(commands.size());
  for (std::string_view c : commands) out.push_back(apply(index, c));
  return out;
}

void RaftNode::Waiter::finish(Status s) {
  {
    std::lock_guard<std::mutex> lock(mu);
    if (done) return;
    done = true;
    result = std::move(s);
  }
  cv.notify_all();
}

Status RaftNode::Waiter::wait(std::chrono::milliseconds timeout, const std::string& what) {
  std::unique_lock<std::mutex> lock(mu);
  if (!cv.wait_for(lock, timeout, [this] { return done; })) {
    return Status::timeout(what + " did not complete within " + std::to_string(timeout.count()) +
                           " ms (no quorum reachable, or no leader; it may still complete)");
  }
  return result;
}

RaftNode::RaftNode(RaftNodeOptions options, std::unique_ptr<RaftStorage> storage,
                   Transport& transport, StateMachine& machine, Random& random)
    : options_(std::move(options)),
      storage_(std::move(storage)),
      transport_(transport),
      machine_(machine),
      random_(random) {}

RaftNode::~RaftNode() { stop(); }

Status RaftNode::start() {
  auto durable = storage_->load();
  if (!durable) return durable.status().withContext("loading the raft log");
  Restored restored;
  restored.hardState = durable->hardState;
  persistedTerm_ = durable->hardState.term;
  restored.snapshot = durable->snapshot;
  restored.entries = std::move(durable->entries);
  if (durable->snapshot) {
    if (Status s = machine_.restore(durable->snapshot->index, durable->snapshot->data); !s) {
      return s.withContext("restoring the state machine from the snapshot");
    }
    restored.applied = durable->snapshot->index;
    applied_ = durable->snapshot->index;
  }
  core_ = std::make_unique<RaftCore>(options_.raft, random_, std::move(restored));
  {
    std::lock_guard<std::mutex> lock(mu_);
    voters_ = core_->voters();
    stopping_ = false;
  }
  transport_.setHandler([this](Message m) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      lastHeard_[m.from] = std::chrono::steady_clock::now();
      if (inbox_.size() >= options_.maxInbox) {
        ++droppedInbox_;
        return;
      }
      inbox_.push_back(std::move(m));
    }
    cv_.notify_one();
  });
  if (Status s = transport_.start(); !s) return s;
  // A sole voter has nobody to wait for: it campaigns at once instead of after an election
  // timeout (a one-manager swarm answers as soon as it starts).
  if (core_->voters() == std::vector<NodeId>{id()}) core_->campaign();
  thread_ = std::thread([this] {
    // Named for top -H and perf: "raft-<id>" (15 characters at most).
    pthread_setname_np(pthread_self(), ("raft-" + std::to_string(id())).substr(0, 15).c_str());
    run();
  });
  return Status::ok();
}

void RaftNode::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  transport_.stop();
  failAll(Status::cancelled("the raft member is stopping"));
}

void RaftNode::post(Command command) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    commands_.push_back(std::move(command));
  }
  cv_.notify_one();
}

Status RaftNode::failure() const {
  std::lock_guard<std::mutex> lock(mu_);
  return failure_;
}

std::vector<NodeId> RaftNode::voters() const {
  std::lock_guard<std::mutex> lock(mu_);
  return voters_;
}

void RaftNode::setLeaderHandler(std::function<void(NodeId, Term)> handler) {
  std::lock_guard<std::mutex> lock(mu_);
  leaderHandler_ = std::move(handler);
}

Status RaftNode::propose(std::string command, std::chrono::milliseconds timeout) {
  auto waiter = std::make_shared<Waiter>();
  const uint64_t request = nextRequest_++;
  post([this, waiter, request, command = std::move(command)](RaftCore&) mutable {
    proposals_[request] = waiter;
    unsent_.emplace_back(request, std::move(command));
  });
  Status s = waiter->wait(timeout, "the proposal");
  if (s.code() == Status::Code::kTimeout) {
    post([this, request](RaftCore&) { proposals_.erase(request); });
  }
  return s;
}

Status RaftNode::readBarrier(std::chrono::milliseconds timeout) {
  auto waiter = std::make_shared<Waiter>();
  const uint64_t request = nextRequest_++;
  post([this, waiter, request](RaftCore& core) {
    reads_[request] = waiter;
    if (Status s = core.readIndex(request); !s) {
      reads_.erase(request);
      waiter->finish(s);
    }
  });
  Status s = waiter->wait(timeout, "the read barrier");
  if (s.code() == Status::Code::kTimeout) {
    post([this, request](RaftCore&) { reads_.erase(request); });
  }
  return s;
}

Status RaftNode::changeMembership(ConfChange change, std::chrono::milliseconds timeout) {
  auto waiter = std::make_shared<Waiter>();
  post([this, waiter, change](RaftCore& core) {
    auto index = core.proposeConfChange(change);
    if (!index) {
      waiter->finish(index.status());
      return;
    }
    confs_[*index] = {core.term(), waiter};
  });
  return waiter->wait(timeout, "the membership change");
}

std::map<NodeId, std::chrono::steady_clock::time_point> RaftNode::lastHeard() const {
  std::lock_guard<std::mutex> lock(mu_);
  return lastHeard_;
}

Status RaftNode::transferLeadership(NodeId to, std::chrono::milliseconds timeout) {
  auto waiter = std::make_shared<Waiter>();
  post([waiter, to](RaftCore& core) { waiter->finish(core.transferLeadership(to)); });
  if (Status s = waiter->wait(timeout, "the leadership transfer"); !s) return s;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (leader() == to) return Status::ok();
    std::this_thread::sleep_for(options_.tick);
  }
  return Status::timeout("leadership did not move to " + std::to_string(to) + " in time");
}

void RaftNode::failAll(const Status& status) {
  // Only after the thread stopped (or from it): the maps are the thread's.
  for (auto& [id, w] : proposals_) w->finish(status);
  for (auto& [idx, tw] : confs_) tw.second->finish(status);
  for (auto& [id, w] : reads_) w->finish(status);
  proposals_.clear();
  confs_.clear();
  reads_.clear();
}

void RaftNode::noteLeadership() {
  const NodeId lead = core_->leader();
  const Term term = core_->term();
  if (lead == leader_.load() && term == term_.load()) return;
  leader_ = lead;
  term_ = term;
  std::function<void(NodeId, Term)> handler;
  {
    std::lock_guard<std::mutex> lock(mu_);
    handler = leaderHandler_;
  }
  log::info("raft", "leadership",
            {{"leader", std::to_string(lead)},
             {"term", std::to_string(term)},
             {"member", std::to_string(id())}});
  if (handler) handler(lead, term);
}

void RaftNode::run() {
  using Clock = std::chrono::steady_clock;
  auto nextTick = Clock::now() + options_.tick;
  for (;;) {
    std::deque<Message> inbox;
    std::deque<Command> commands;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_until(lock, nextTick,
                     [this] { return stopping_ || !inbox_.empty() || !commands_.empty(); });
      if (stopping_) return;
      inbox.swap(inbox_);
      commands.swap(commands_);
    }
    for (const Message& m : inbox) {
      if (m.type == MessageType::kProposeDropped) {
        parkDropped(m);
      } else {
        core_->step(m);
      }
    }
    for (Command& c : commands) c(*core_);
    proposeUnsent();
    retryParked();
    if (Clock::now() >= nextTick) {
      core_->tick();
      nextTick += options_.tick;
      if (nextTick < Clock::now()) nextTick = Clock::now() + options_.tick;  // we fell behind
    }
    while (core_->hasReady()) {
      processReady();
      if (!failure().isOk()) return;
    }
    noteLeadership();
  }
}

void RaftNode::proposeUnsent() {
  // Every proposal that arrived since the last pass goes into as few entries as the group
  // bound allows: the per-entry costs (log record, replication, apply) are paid once per
  // group rather than once per command.
  std::size_t at = 0;
  while (at < unsent_.size()) {
    std::size_t end = at + 1;
    std::size_t bytes = unsent_[at].second.size();
    while (end < unsent_.size() && end - at < kMaxGroupCommands &&
           bytes + unsent_[end].second.size() <= kMaxGroupBytes) {
      bytes += unsent_[end].second.size();
      ++end;
    }
    std::string data = end - at == 1 ? wrap(id(), unsent_[at].first, unsent_[at].second)
                                     : wrapGroup(id(), unsent_, at, end);
    if (Status s = core_->proposeOrForward(std::move(data)); !s) {
      for (std::size_t i = at; i < end; ++i) failProposal(unsent_[i].first, s);
    }
    at = end;
  }
  unsent_.clear();
}

void RaftNode::failProposal(uint64_t request, const Status& s) {
  if (auto w = proposals_.find(request); w != proposals_.end()) {
    w->second->finish(s);
    proposals_.erase(w);
  }
}

std::vector<uint64_t> RaftNode::ownRequests(std::string_view entry) const {
  std::vector<uint64_t> out;
  if (entry.size() >= kEnvelopeSize && entry[0] == kEnvelopeTag) {
    if (getU64(entry, 1) == id()) out.push_back(getU64(entry, 9));
  } else if (entry.size() >= kGroupHeaderSize && entry[0] == kGroupTag &&
             getU64(entry, 1) == id()) {
    if (auto group = unwrapGroup(entry)) {
      for (const auto& [request, command] : *group) out.push_back(request);
    }
  }
  return out;
}

bool RaftNode::pending(std::string_view entry) const {
  for (uint64_t request : ownRequests(entry)) {
    if (proposals_.count(request) != 0) return true;
  }
  return false;
}

void RaftNode::parkDropped(const Message& m) {
  // Nobody appended these entries: proposing them again cannot apply a command twice. Only
  // the proposer acts on them; one that passed on another member's entries lets it time out.
  for (const Entry& e : m.entries) {
    if (!pending(e.data)) continue;
    parked_.push_back({e.data, m.from, std::chrono::steady_clock::now()});
  }
}

void RaftNode::retryParked() {
  if (parked_.empty()) return;
  const NodeId lead = core_->role() == Role::kLeader ? id() : core_->leader();
  if (lead == kNone) return;
  const auto now = std::chrono::steady_clock::now();
  const auto patience = options_.tick * options_.raft.electionTicks;
  std::vector<Parked> keep;
  for (Parked& p : parked_) {
    if (!pending(p.entry)) continue;  // its proposers gave up waiting
    if (lead == p.droppedBy && now - p.at < patience) {
      keep.push_back(std::move(p));
      continue;
    }
    if (Status s = core_->proposeOrForward(p.entry); !s) {
      for (uint64_t request : ownRequests(p.entry)) failProposal(request, s);
    }
  }
  parked_ = std::move(keep);
}

void RaftNode::processReady() {
  Ready rd = core_->ready();
  // Durable first: no promise in this Ready (a vote, an acknowledgement, a new term) may be
  // seen by anyone before it is on disk. The one exception is the leader's AppendEntries in
  // a Ready that does not change its term (Raft thesis, 10.2.1): the leader writes its log
  // in parallel with its followers instead of before them. That is safe here because the
  // followers' acknowledgements are stepped on this thread, after save() returns, so the
  // leader counts itself towards a commit only once its own copy is durable; and if save()
  // fails the member stops, as a leader that crashed before its fsync would.
  const bool early =
      core_->role() == Role::kLeader && (!rd.hardState || rd.hardState->term == persistedTerm_);
  if (early) {
    std::vector<Message> later;
    for (Message& m : rd.messages) {
      if (m.type == MessageType::kAppend) {
        transport_.send(std::move(m));
      } else {
        later.push_back(std::move(m));
      }
    }
    rd.messages = std::move(later);
  }
  if (Status s = storage_->save(rd.hardState, rd.entries, rd.snapshot); !s) {
    log::error("raft", "cannot persist the raft log; this member stops", {{"error", s.message()}});
    std::lock_guard<std::mutex> lock(mu_);
    failure_ = s;
    stopping_ = true;
    return;
  }
  if (rd.hardState) persistedTerm_ = rd.hardState->term;
  for (Message& m : rd.messages) transport_.send(std::move(m));
  if (rd.snapshot) {
    if (Status s = machine_.restore(rd.snapshot->index, rd.snapshot->data); !s) {
      log::error("raft", "cannot restore the state machine from a snapshot",
                 {{"error", s.message()}});
      std::lock_guard<std::mutex> lock(mu_);
      failure_ = s;
      stopping_ = true;
      return;
    }
    applied_ = rd.snapshot->index;
  }
  for (const Entry& e : rd.committed) applyCommitted(e);
  for (auto& [waiter, outcome] : outcomes_) waiter->finish(std::move(outcome));
  outcomes_.clear();
  readsToServe_.insert(readsToServe_.end(), rd.reads.begin(), rd.reads.end());
  for (auto it = readsToServe_.begin(); it != readsToServe_.end();) {
    if (it->index > applied_.load()) {
      ++it;
      continue;
    }
    if (auto w = reads_.find(it->id); w != reads_.end()) {
      w->second->finish(Status::ok());
      reads_.erase(w);
    }
    it = readsToServe_.erase(it);
  }
  core_->advance();
  {
    std::lock_guard<std::mutex> lock(mu_);
    voters_ = core_->voters();
  }
  maybeCompact();
}

void RaftNode::applyCommitted(const Entry& e) {
  const bool command =
      e.type == EntryType::kNormal && !e.data.empty() &&
      ((e.data.size() >= kEnvelopeSize && e.data[0] == kEnvelopeTag) || e.data[0] == kGroupTag);
  if (!command) applied_ = e.index;  // nothing for the state machine (a command sets it after)
  if (e.type == EntryType::kConfChange) {
    if (auto it = confs_.find(e.index); it != confs_.end()) {
      it->second.second->finish(it->second.first == e.term
                                    ? Status::ok()
                                    : Status::unavailable("the membership change was lost to a "
                                                          "leader change; retry"));
      confs_.erase(it);
    }
    return;
  }
  if (e.data.empty()) return;  // a leader's no-op
  if (e.data[0] == kGroupTag) {
    auto group = unwrapGroup(e.data);
    if (!group) {
      log::error("raft", "skipping a committed group entry that is malformed",
                 {{"index", std::to_string(e.index)}});
      applied_ = e.index;
      return;
    }
    std::vector<std::string_view> commands;
    commands.reserve(group->size());
    for (const auto& [request, cmd] : *group) commands.push_back(cmd);
    std::vector<Status> outcomes = machine_.applyGroup(e.index, commands);
    applied_ = e.index;
    if (getU64(e.data, 1) != id()) return;
    for (std::size_t i = 0; i < group->size() && i < outcomes.size(); ++i) {
      if (auto it = proposals_.find((*group)[i].first); it != proposals_.end()) {
        outcomes_.emplace_back(std::move(it->second), std::move(outcomes[i]));
        proposals_.erase(it);
      }
    }
    return;
  }
  if (e.data.size() < kEnvelopeSize || e.data[0] != kEnvelopeTag) {
    log::error("raft", "skipping a committed entry that is not a command",
               {{"index", std::to_string(e.index)}});
    return;
  }
  const NodeId origin = getU64(e.data, 1);
  const uint64_t request = getU64(e.data, 9);
  Status outcome = machine_.apply(e.index, std::string_view(e.data).substr(kEnvelopeSize));
  applied_ = e.index;
  if (origin == id()) {
    if (auto it = proposals_.find(request); it != proposals_.end()) {
      // Woken once the whole Ready is applied: a proposer woken now would start its next
      // transaction at once and contend with the rest of this batch for the store's lock.
      outcomes_.emplace_back(std::move(it->second), std::move(outcome));
      proposals_.erase(it);
    }
  }
}

void RaftNode::maybeCompact() {
  if (options_.snapshotEvery == 0 || core_->appliedSinceSnapshot() < options_.snapshotEvery) return;
  auto data = machine_.snapshot();
  if (!data) {
    log::error("raft", "cannot snapshot the state machine", {{"error", data.status().message()}});
    return;
  }
  auto snap = core_->compact(core_->appliedIndex(), std::move(data.value()));
  if (!snap) return;
  if (Status s = storage_->compact(snap->index, *snap); !s) {
    log::error("raft", "cannot store the snapshot", {{"error", s.message()}});
  }
}

}  // namespace shoal::raft
