#include "kernel/raft/raft_core.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "kernel/common/assert.h"

namespace shoal::raft {

namespace {
// Message::context of a vote request made by a leadership transfer.
constexpr uint64_t kTransferContext = 1;
}  // namespace

const char* messageTypeName(MessageType type) {
  switch (type) {
    case MessageType::kPreVote:
      return "PreVote";
    case MessageType::kPreVoteResp:
      return "PreVoteResp";
    case MessageType::kVote:
      return "Vote";
    case MessageType::kVoteResp:
      return "VoteResp";
    case MessageType::kAppend:
      return "Append";
    case MessageType::kAppendResp:
      return "AppendResp";
    case MessageType::kHeartbeat:
      return "Heartbeat";
    case MessageType::kHeartbeatResp:
      return "HeartbeatResp";
    case MessageType::kSnapshot:
      return "Snapshot";
    case MessageType::kTimeoutNow:
      return "TimeoutNow";
    case MessageType::kPropose:
      return "Propose";
    case MessageType::kProposeDropped:
      return "ProposeDropped";
  }
  return "?";
}

const char* roleName(Role role) {
  switch (role) {
    case Role::kFollower:
      return "follower";
    case Role::kPreCandidate:
      return "pre-candidate";
    case Role::kCandidate:
      return "candidate";
    case Role::kLeader:
      return "leader";
  }
  return "?";
}

std::string ConfChange::encode() const {
  std::string out = std::to_string(static_cast<int>(type)) + " " + std::to_string(node) + " v";
  for (NodeId v : voters) out += " " + std::to_string(v);
  out += " l";
  for (NodeId l : learners) out += " " + std::to_string(l);
  return out;
}

std::optional<ConfChange> ConfChange::decode(const std::string& data) {
  ConfChange cc;
  std::istringstream in(data);
  unsigned type = 3;
  std::string tag;
  if (!(in >> type >> cc.node >> tag) || type > 2 || cc.node == 0 || tag != "v") {
    return std::nullopt;
  }
  cc.type = static_cast<ConfChange::Type>(type);
  std::vector<NodeId>* into = &cc.voters;
  std::string word;
  while (in >> word) {
    if (word == "l") {
      into = &cc.learners;
      continue;
    }
    char* end = nullptr;
    unsigned long long id = std::strtoull(word.c_str(), &end, 10);
    if (*end != '\0' || id == 0) return std::nullopt;
    into->push_back(id);
  }
  if (cc.voters.empty()) return std::nullopt;
  return cc;
}

RaftCore::RaftCore(RaftConfig config, Random& random, Restored restored)
    : config_(std::move(config)), random_(random) {
  SHOAL_CHECK(config_.id != kNone);
  SHOAL_CHECK(config_.electionTicks > config_.heartbeatTicks && config_.heartbeatTicks > 0);
  voters_ = config_.voters;
  if (restored.snapshot) {
    snapshot_ = std::move(*restored.snapshot);
    if (!snapshot_.voters.empty()) {
      voters_ = snapshot_.voters;
      learners_ = snapshot_.learners;
    }
    confApplied_ = snapshot_.index;
  }
  log_ = std::move(restored.entries);
  for (std::size_t i = 0; i < log_.size(); ++i) {
    SHOAL_CHECK(log_[i].index == snapshot_.index + i + 1);
  }
  restored.applied = std::max(restored.applied, snapshot_.index);
  term_ = restored.hardState.term;
  vote_ = restored.hardState.vote;
  // Membership changes take effect on commit: replay the committed ones.
  commitTo(std::min(restored.hardState.commit, lastIndex()));
  applied_ = std::min(restored.applied, commit_);
  stable_ = lastIndex();
  persisted_ = restored.hardState;
  becomeFollower(term_, kNone);
}

Term RaftCore::termAt(Index index) const {
  if (index == snapshot_.index) return snapshot_.term;
  if (index < snapshot_.index || index > lastIndex()) return 0;
  return entryAt(index).term;
}

bool RaftCore::isVoter(NodeId id) const {
  return std::find(voters_.begin(), voters_.end(), id) != voters_.end();
}

std::vector<NodeId> RaftCore::members() const {
  std::vector<NodeId> all = voters_;
  all.insert(all.end(), learners_.begin(), learners_.end());
  return all;
}

void RaftCore::addProgress(NodeId id) {
  Progress& p = progress_[id];
  p.next = lastIndex() + 1;
  p.match = id == config_.id ? lastIndex() : 0;
  p.recentActive = true;  // a fresh member gets an election timeout before it counts against us
}

void RaftCore::commitTo(Index index) {
  if (index <= commit_) return;
  commit_ = index;
  for (Index i = std::max(confApplied_, snapshot_.index) + 1; i <= commit_; ++i) {
    const Entry& e = entryAt(i);
    if (e.type != EntryType::kConfChange) continue;
    if (auto cc = ConfChange::decode(e.data)) applyConfChange(*cc);
  }
  confApplied_ = std::max(confApplied_, commit_);
}

void RaftCore::applyConfChange(const ConfChange& cc) {
  voters_ = cc.voters;
  learners_ = cc.learners;
  std::sort(voters_.begin(), voters_.end());
  std::sort(learners_.begin(), learners_.end());
  if (role_ != Role::kLeader) return;
  const std::vector<NodeId> now = members();
  for (auto it = progress_.begin(); it != progress_.end();) {
    if (std::find(now.begin(), now.end(), it->first) == now.end() && it->first != config_.id) {
      if (transferee_ == it->first) abortTransfer();
      it = progress_.erase(it);
    } else {
      ++it;
    }
  }
  for (NodeId id : now) {
    if (!progress_.count(id)) addProgress(id);
  }
  if (!isVoter(config_.id)) stepDownPending_ = true;  // done once this commit settles
}

void RaftCore::resetTimers() {
  electionElapsed_ = 0;
  heartbeatElapsed_ = 0;
  randomizedTimeout_ =
      config_.electionTicks + static_cast<int>(random_.uniform(config_.electionTicks));
}

bool RaftCore::inLease() const {
  return config_.checkQuorum && lead_ != kNone && electionElapsed_ < config_.electionTicks;
}

void RaftCore::becomeFollower(Term term, NodeId lead) {
  if (term != term_) {
    term_ = term;
    vote_ = kNone;
  }
  role_ = Role::kFollower;
  lead_ = lead;
  votes_.clear();
  progress_.clear();
  abortTransfer();
  readRounds_.clear();  // unconfirmed reads are dropped: clients retry with the new leader
  resetTimers();
}

void RaftCore::becomePreCandidate() {
  // A pre-candidate keeps its term and vote: the pre-vote changes nothing durable.
  role_ = Role::kPreCandidate;
  lead_ = kNone;
  resetTimers();  // a fresh random timeout, so repeated campaigns do not stay in lockstep
  votes_.clear();
  votes_[config_.id] = true;
  progress_.clear();
}

void RaftCore::becomeCandidate() {
  term_ += 1;
  vote_ = config_.id;
  role_ = Role::kCandidate;
  lead_ = kNone;
  votes_.clear();
  votes_[config_.id] = true;
  progress_.clear();
  resetTimers();
}

void RaftCore::becomeLeader() {
  role_ = Role::kLeader;
  lead_ = config_.id;
  votes_.clear();
  progress_.clear();
  for (NodeId v : members()) addProgress(v);
  // Earlier terms may have left a membership change uncommitted: allow the next one only
  // after this term's first entry commits.
  pendingConfIndex_ = lastIndex() + 1;
  resetTimers();
  // An entry of the new term: entries of earlier terms commit only through it.
  appendAsLeader(Entry{});
  pendingBroadcast_ = true;
}

void RaftCore::campaign() {
  if (role_ == Role::kLeader || !isVoter(config_.id)) return;
  campaignTransfer_ = false;
  if (config_.preVote) {
    becomePreCandidate();
    requestVotes(true);
  } else {
    becomeCandidate();
    requestVotes(false);
  }
}

void RaftCore::requestVotes(bool pre) {
  // A single-member cluster wins at once.
  if (isVoter(config_.id) && static_cast<int>(votes_.size()) >= quorum()) {
    if (pre) {
      becomeCandidate();
      requestVotes(false);
    } else {
      becomeLeader();
    }
    return;
  }
  for (NodeId v : voters_) {
    if (v == config_.id) continue;
    Message m;
    m.type = pre ? MessageType::kPreVote : MessageType::kVote;
    m.to = v;
    m.term = pre ? term_ + 1 : term_;
    m.index = lastIndex();
    m.logTerm = termAt(lastIndex());
    if (campaignTransfer_) m.context = kTransferContext;
    send(std::move(m));
  }
}

void RaftCore::send(Message m) {
  m.from = config_.id;
  if (m.term == 0) m.term = term_;
  outbox_.push_back(std::move(m));
}

void RaftCore::tick() {
  if (role_ == Role::kLeader) {
    ++heartbeatElapsed_;
    ++electionElapsed_;
    if (electionElapsed_ >= config_.electionTicks) {
      electionElapsed_ = 0;
      if (config_.checkQuorum) {
        int active = 0;
        for (auto& [id, p] : progress_) {
          if (isVoter(id) && (id == config_.id || p.recentActive)) ++active;
          p.recentActive = false;
        }
        if (active < quorum()) {
          becomeFollower(term_, kNone);
          return;
        }
      }
    }
    if (transferee_ != kNone && ++transferElapsed_ >= config_.electionTicks) abortTransfer();
    for (auto& [id, p] : progress_) {
      // A snapshot lost on the way is sent again after an election timeout.
      if (p.state == ProgressState::kSnapshot && ++p.snapshotTicks > config_.electionTicks) {
        p.state = ProgressState::kProbe;
        p.probeSent = false;
      }
    }
    if (heartbeatElapsed_ >= config_.heartbeatTicks) {
      heartbeatElapsed_ = 0;
      broadcastHeartbeat();
    }
    return;
  }
  ++electionElapsed_;
  if (pastElectionTimeout()) {
    electionElapsed_ = 0;
    campaign();
  }
}

void RaftCore::step(const Message& m) {
  if (m.to != config_.id) return;
  if (m.type == MessageType::kPropose) {  // carries no term: it is a client's request
    handlePropose(m);
    return;
  }
  if (m.type == MessageType::kProposeDropped) return;  // for RaftNode, which made the proposal
  if (m.term > term_) {
    if (m.type == MessageType::kVote || m.type == MessageType::kPreVote) {
      // With check-quorum, a node that hears from a live leader ignores campaigns: a
      // partitioned node rejoining cannot depose a healthy leader.
      if (inLease() && m.context != kTransferContext) return;
    }
    if (m.type == MessageType::kPreVote) {
      // A pre-vote never changes our term.
    } else if (m.type == MessageType::kPreVoteResp && !m.reject) {
      // A granted pre-vote carries the term we would campaign at; ours stays.
    } else if (m.type == MessageType::kAppend || m.type == MessageType::kHeartbeat ||
               m.type == MessageType::kSnapshot) {
      becomeFollower(m.term, m.from);
    } else {
      becomeFollower(m.term, kNone);
    }
  } else if (m.term < term_) {
    if ((config_.checkQuorum || config_.preVote) &&
        (m.type == MessageType::kAppend || m.type == MessageType::kHeartbeat ||
         m.type == MessageType::kSnapshot)) {
      // A deposed leader learns the newer term from this answer and steps down.
      Message resp;
      resp.type = MessageType::kAppendResp;
      resp.to = m.from;
      send(std::move(resp));
    } else if (m.type == MessageType::kPreVote) {
      Message resp;
      resp.type = MessageType::kPreVoteResp;
      resp.to = m.from;
      resp.reject = true;
      send(std::move(resp));
    }
    return;
  }

  if (m.type == MessageType::kVote || m.type == MessageType::kPreVote) {
    handleVoteRequest(m);
    return;
  }
  switch (role_) {
    case Role::kLeader:
      stepLeader(m);
      break;
    case Role::kPreCandidate:
    case Role::kCandidate:
      stepCandidate(m);
      break;
    case Role::kFollower:
      stepFollower(m);
      break;
  }
}

bool RaftCore::logUpToDate(Term lastTerm, Index lastIdx) const {
  const Term ours = termAt(lastIndex());
  return lastTerm > ours || (lastTerm == ours && lastIdx >= lastIndex());
}

void RaftCore::handleVoteRequest(const Message& m) {
  const bool pre = m.type == MessageType::kPreVote;
  const bool canVote =
      vote_ == m.from || (vote_ == kNone && lead_ == kNone) || (pre && m.term > term_);
  Message resp;
  resp.type = pre ? MessageType::kPreVoteResp : MessageType::kVoteResp;
  resp.to = m.from;
  if (canVote && logUpToDate(m.logTerm, m.index)) {
    resp.term = m.term;
    send(std::move(resp));
    if (!pre) {
      electionElapsed_ = 0;
      vote_ = m.from;
    }
  } else {
    resp.reject = true;
    send(std::move(resp));
  }
}

void RaftCore::stepCandidate(const Message& m) {
  switch (m.type) {
    case MessageType::kAppend:
      becomeFollower(m.term, m.from);
      handleAppend(m);
      return;
    case MessageType::kHeartbeat:
      becomeFollower(m.term, m.from);
      handleHeartbeat(m);
      return;
    case MessageType::kSnapshot:
      becomeFollower(m.term, m.from);
      handleSnapshot(m);
      return;
    case MessageType::kPreVoteResp:
    case MessageType::kVoteResp: {
      const bool pre = m.type == MessageType::kPreVoteResp;
      if (pre != (role_ == Role::kPreCandidate)) return;  // an answer to an older campaign
      if (!isVoter(m.from)) return;
      votes_.emplace(m.from, !m.reject);
      int granted = 0, rejected = 0;
      for (const auto& [id, yes] : votes_) (yes ? granted : rejected)++;
      if (granted >= quorum()) {
        if (pre) {
          becomeCandidate();
          requestVotes(false);
        } else {
          becomeLeader();
        }
      } else if (rejected >= quorum()) {
        becomeFollower(term_, kNone);
      }
      return;
    }
    default:
      return;
  }
}

void RaftCore::stepFollower(const Message& m) {
  switch (m.type) {
    case MessageType::kAppend:
      electionElapsed_ = 0;
      lead_ = m.from;
      handleAppend(m);
      return;
    case MessageType::kHeartbeat:
      electionElapsed_ = 0;
      lead_ = m.from;
      handleHeartbeat(m);
      return;
    case MessageType::kSnapshot:
      electionElapsed_ = 0;
      lead_ = m.from;
      handleSnapshot(m);
      return;
    case MessageType::kTimeoutNow:
      // The leader hands over: campaign at once, skipping the pre-vote, and say so, so that
      // members in the old leader's lease still answer.
      becomeCandidate();
      campaignTransfer_ = true;
      requestVotes(false);
      return;
    default:
      return;
  }
}

std::optional<Index> RaftCore::tryAppend(Index prevIndex, Term prevTerm,
                                         const std::vector<Entry>& entries) {
  if (termAt(prevIndex) != prevTerm) return std::nullopt;
  for (const Entry& e : entries) {
    if (e.index <= lastIndex()) {
      if (termAt(e.index) == e.term) continue;
      // A conflicting suffix: it was never committed (the leader's log has every committed
      // entry), so drop it, and what storage held of it.
      SHOAL_CHECK(e.index > commit_);
      log_.resize(e.index - 1 - snapshot_.index);
      stable_ = std::min(stable_, e.index - 1);
    }
    SHOAL_CHECK(e.index == lastIndex() + 1);
    log_.push_back(e);
  }
  return prevIndex + entries.size();
}

void RaftCore::handleAppend(const Message& m) {
  Message resp;
  resp.type = MessageType::kAppendResp;
  resp.to = m.from;
  if (m.index < commit_) {
    resp.index = commit_;
    send(std::move(resp));
    return;
  }
  if (auto last = tryAppend(m.index, m.logTerm, m.entries)) {
    commitTo(std::min(m.commit, *last));
    resp.index = *last;
  } else {
    resp.index = m.index;
    resp.reject = true;
    resp.rejectHint = std::min(m.index, lastIndex());
  }
  send(std::move(resp));
}

void RaftCore::handleHeartbeat(const Message& m) {
  // The leader sends min(match, commit): every entry up to it is ours too.
  commitTo(std::min(m.commit, lastIndex()));
  Message resp;
  resp.type = MessageType::kHeartbeatResp;
  resp.to = m.from;
  resp.context = m.context;
  send(std::move(resp));
}

void RaftCore::stepLeader(const Message& m) {
  auto it = progress_.find(m.from);
  if (it == progress_.end()) return;
  Progress& pr = it->second;
  switch (m.type) {
    case MessageType::kAppendResp:
      pr.recentActive = true;
      handleAppendResp(m);
      return;
    case MessageType::kHeartbeatResp:
      handleHeartbeatResp(m);
      pr.recentActive = true;
      pr.probeSent = false;
      // A lost append would otherwise hold its inflight slot forever.
      if (pr.inflight.size() >= config_.maxInflight) pr.inflight.pop_front();
      // A follower still behind may have lost an append: send from `next` even when that
      // carries nothing, so a gap shows up as a rejection and replication restarts from
      // what the follower really has.
      if (pr.match < lastIndex()) sendAppend(m.from, SendMode::kAlways);
      return;
    default:
      return;
  }
}

void RaftCore::handleAppendResp(const Message& m) {
  Progress& pr = progress_[m.from];
  if (pr.state == ProgressState::kSnapshot) {
    if (m.reject || m.index < pr.pendingSnapshot) return;  // not the answer to the snapshot
    pr.state = ProgressState::kProbe;
    pr.probeSent = false;
  }
  if (m.reject) {
    if (pr.state == ProgressState::kReplicate) {
      if (m.index <= pr.match) return;  // stale
      pr.state = ProgressState::kProbe;
      pr.inflight.clear();
      pr.next = pr.match + 1;
    } else {
      if (pr.next - 1 != m.index) return;  // an answer to an older probe
      pr.next = std::max<Index>(1, std::min(m.index, m.rejectHint + 1));
    }
    pr.probeSent = false;
    sendAppend(m.from, SendMode::kCommit);
    return;
  }
  bool updated = false;
  if (m.index > pr.match) {
    pr.match = m.index;
    updated = true;
  }
  pr.next = std::max(pr.next, m.index + 1);
  while (!pr.inflight.empty() && pr.inflight.front() <= m.index) pr.inflight.pop_front();
  if (pr.state == ProgressState::kProbe) {
    pr.state = ProgressState::kReplicate;
    pr.next = pr.match + 1;
    pr.probeSent = false;
    pr.inflight.clear();
  }
  const NodeId from = m.from;
  // maybeCommit may apply a membership change that removes `from` (invalidating `pr`) or
  // this leader itself.
  if (updated && maybeCommit()) {
    if (role_ != Role::kLeader) return;
    broadcastAppend();
  } else if (pr.match < lastIndex()) {
    sendAppend(from, SendMode::kEntries);
  }
  auto it = progress_.find(from);
  if (it != progress_.end() && from == transferee_ && it->second.match == lastIndex()) {
    sendTimeoutNow(from);
  }
}

bool RaftCore::maybeCommit() {
  if (voters_.empty()) return false;
  std::vector<Index> matches;
  for (NodeId v : voters_) {
    auto it = progress_.find(v);
    matches.push_back(it == progress_.end() ? 0 : it->second.match);
  }
  std::sort(matches.begin(), matches.end(), std::greater<Index>());
  const Index candidate = matches[quorum() - 1];
  // Only an entry of the current term commits by counting replicas (Raft §5.4.2).
  if (candidate > commit_ && termAt(candidate) == term_) {
    commitTo(candidate);
    // A change that shrank the quorum may commit more at once; a leader that removed itself
    // hands over once the change is committed (the others elect a new leader).
    maybeCommit();
    if (stepDownPending_) {
      stepDownPending_ = false;
      broadcastAppend();  // let the others learn the commit before we go quiet
      becomeFollower(term_, kNone);
    }
    return true;
  }
  return false;
}

bool RaftCore::sendAppend(NodeId to, SendMode mode) {
  Progress& pr = progress_[to];
  if (pr.state == ProgressState::kSnapshot) return false;  // wait for its answer
  if (pr.state == ProgressState::kProbe && pr.probeSent) return false;
  if (pr.next - 1 < snapshot_.index) {
    // What the follower needs next was compacted away: it gets the snapshot instead.
    sendSnapshot(to);
    return true;
  }
  if (pr.state == ProgressState::kReplicate && pr.inflight.size() >= config_.maxInflight) {
    return false;
  }
  Message m;
  m.type = MessageType::kAppend;
  m.to = to;
  m.index = pr.next - 1;
  m.logTerm = termAt(m.index);
  m.commit = commit_;
  std::size_t bytes = 0;
  for (Index i = pr.next; i <= lastIndex(); ++i) {
    const Entry& e = entryAt(i);
    if (!m.entries.empty() && (m.entries.size() >= config_.maxEntriesPerMessage ||
                               bytes + e.data.size() > config_.maxBytesPerMessage)) {
      break;
    }
    bytes += e.data.size();
    m.entries.push_back(e);
  }
  if (m.entries.empty()) {
    // Nothing new: an empty append only carries the commit index. While appends are in
    // flight they carry it anyway, and an empty one would race ahead of them.
    if (mode == SendMode::kEntries) return false;
    if (mode == SendMode::kCommit && !pr.inflight.empty()) return false;
  }
  if (pr.state == ProgressState::kReplicate) {
    if (!m.entries.empty()) {
      pr.next = m.entries.back().index + 1;
      pr.inflight.push_back(m.entries.back().index);
    }
  } else {
    pr.probeSent = true;
  }
  send(std::move(m));
  return true;
}

void RaftCore::sendSnapshot(NodeId to) {
  Progress& pr = progress_[to];
  pr.state = ProgressState::kSnapshot;
  pr.pendingSnapshot = snapshot_.index;
  pr.snapshotTicks = 0;
  pr.inflight.clear();
  Message m;
  m.type = MessageType::kSnapshot;
  m.to = to;
  m.snapshot = snapshot_;
  send(std::move(m));
}

void RaftCore::handleSnapshot(const Message& m) {
  const Snapshot& s = m.snapshot;
  Message resp;
  resp.type = MessageType::kAppendResp;
  resp.to = m.from;
  if (s.index <= commit_) {
    resp.index = commit_;  // nothing new in it
  } else if (termAt(s.index) == s.term && s.index <= lastIndex()) {
    // Our log already holds its last entry: keep the log, just commit up to it.
    commitTo(s.index);
    resp.index = s.index;
  } else {
    snapshot_ = s;
    log_.clear();
    commit_ = s.index;
    stable_ = s.index;
    if (!s.voters.empty()) {
      voters_ = s.voters;
      learners_ = s.learners;
    }
    confApplied_ = s.index;
    snapshotToReady_ = true;
    resp.index = s.index;
  }
  send(std::move(resp));
}

Result<Snapshot> RaftCore::compact(Index upTo, std::string data) {
  if (upTo > applied_) {
    return Status::invalidArgument("cannot compact up to " + std::to_string(upTo) + ": only " +
                                   std::to_string(applied_) + " is applied");
  }
  if (upTo <= snapshot_.index) {
    return Status::invalidArgument("entries up to " + std::to_string(upTo) +
                                   " are already compacted (snapshot at " +
                                   std::to_string(snapshot_.index) + ")");
  }
  Snapshot s;
  s.index = upTo;
  s.term = termAt(upTo);
  s.voters = voters_;
  s.learners = learners_;
  s.data = std::move(data);
  log_.erase(log_.begin(), log_.begin() + static_cast<std::ptrdiff_t>(upTo - snapshot_.index));
  snapshot_ = s;
  return s;
}

Result<Index> RaftCore::proposeConfChange(const ConfChange& cc) {
  if (role_ != Role::kLeader) return Status::unavailable("not the leader");
  if (transferee_ != kNone) return Status::unavailable("leadership is being transferred; retry");
  if (pendingConfIndex_ > commit_) {
    return Status::unavailable("a membership change is already in progress; retry when it commits");
  }
  const bool learner = std::find(learners_.begin(), learners_.end(), cc.node) != learners_.end();
  switch (cc.type) {
    case ConfChange::Type::kAddVoter:
      if (isVoter(cc.node)) {
        return Status::alreadyExists("node " + std::to_string(cc.node) + " is already a voter");
      }
      break;
    case ConfChange::Type::kAddLearner:
      if (isVoter(cc.node) || learner) {
        return Status::alreadyExists("node " + std::to_string(cc.node) + " is already a member");
      }
      break;
    case ConfChange::Type::kRemoveVoter:
      if (!isVoter(cc.node) && !learner) {
        return Status::notFound("node " + std::to_string(cc.node) + " is not a member");
      }
      if (isVoter(cc.node) && voters_.size() == 1) {
        return Status::failedPrecondition("cannot remove the last voter");
      }
      break;
  }
  ConfChange full = cc;
  full.voters = voters_;
  full.learners = learners_;
  auto drop = [](std::vector<NodeId>& v, NodeId id) {
    v.erase(std::remove(v.begin(), v.end(), id), v.end());
  };
  drop(full.voters, cc.node);
  drop(full.learners, cc.node);
  if (cc.type == ConfChange::Type::kAddVoter) full.voters.push_back(cc.node);
  if (cc.type == ConfChange::Type::kAddLearner) full.learners.push_back(cc.node);
  std::sort(full.voters.begin(), full.voters.end());
  std::sort(full.learners.begin(), full.learners.end());
  Entry e;
  e.type = EntryType::kConfChange;
  e.data = full.encode();
  appendAsLeader(std::move(e));
  pendingConfIndex_ = lastIndex();
  pendingBroadcast_ = true;
  return lastIndex();
}

void RaftCore::handlePropose(const Message& m) {
  // Entries not appended here and not passed on go back to the sender, so that its proposer
  // does not wait out its timeout for an entry nobody holds.
  auto drop = [&] {
    if (m.from == kNone || m.from == config_.id) return;
    Message back;
    back.type = MessageType::kProposeDropped;
    back.to = m.from;
    back.entries = m.entries;
    send(std::move(back));
  };
  if (role_ == Role::kLeader) {
    if (transferee_ != kNone) {  // handing over: the proposer retries with the next leader
      drop();
      return;
    }
    for (const Entry& e : m.entries) {
      if (e.type != EntryType::kNormal) continue;  // membership changes are never forwarded
      Entry copy;
      copy.data = e.data;
      appendAsLeader(std::move(copy));
    }
    pendingBroadcast_ = true;
  } else if (lead_ != kNone && lead_ != m.from) {
    Message fwd;
    fwd.type = MessageType::kPropose;
    fwd.to = lead_;
    fwd.entries = m.entries;
    send(std::move(fwd));
  } else {
    drop();  // no leader known here (a member that just started, or an election under way)
  }
}

Status RaftCore::proposeOrForward(std::string data) {
  if (role_ == Role::kLeader) {
    auto r = propose(std::move(data));
    return r.status();
  }
  if (lead_ == kNone) return Status::unavailable("no leader is known; retry shortly");
  Message m;
  m.type = MessageType::kPropose;
  m.to = lead_;
  Entry e;
  e.data = std::move(data);
  m.entries.push_back(std::move(e));
  send(std::move(m));
  return Status::ok();
}

Status RaftCore::transferLeadership(NodeId to) {
  if (role_ != Role::kLeader) return Status::unavailable("not the leader");
  if (!isVoter(to)) {
    return Status::invalidArgument("node " + std::to_string(to) + " is not a voting member");
  }
  if (to == config_.id) return Status::ok();
  transferee_ = to;
  transferElapsed_ = 0;
  if (progress_[to].match == lastIndex()) {
    sendTimeoutNow(to);
  } else {
    sendAppend(to, SendMode::kCommit);
  }
  return Status::ok();
}

void RaftCore::sendTimeoutNow(NodeId to) {
  Message m;
  m.type = MessageType::kTimeoutNow;
  m.to = to;
  send(std::move(m));
}

Status RaftCore::readIndex(uint64_t id) {
  if (role_ != Role::kLeader) {
    return Status::unavailable(
        lead_ == kNone ? std::string("not the leader, and no leader is known")
                       : "not the leader (the leader is " + std::to_string(lead_) + ")");
  }
  // Until an entry of its own term commits, a new leader's commit index may be behind what
  // an earlier leader acknowledged (Raft §8).
  if (termAt(commit_) != term_) {
    return Status::unavailable("the leader has not committed an entry of its term yet; retry");
  }
  if (quorum() == 1) {
    readyReads_.push_back({id, commit_});
    return Status::ok();
  }
  const uint64_t round = nextReadRound_++;
  ReadRound& r = readRounds_[round];
  r.reads.push_back({id, commit_});
  r.acks.push_back(config_.id);
  // Confirm leadership now rather than at the next heartbeat.
  for (NodeId v : voters_) {
    if (v == config_.id) continue;
    Message m;
    m.type = MessageType::kHeartbeat;
    m.to = v;
    m.commit = std::min(progress_[v].match, commit_);
    m.context = round;
    send(std::move(m));
  }
  return Status::ok();
}

void RaftCore::handleHeartbeatResp(const Message& m) {
  if (m.context == 0) return;
  auto it = readRounds_.find(m.context);
  if (it == readRounds_.end()) return;
  auto& acks = it->second.acks;
  if (isVoter(m.from) && std::find(acks.begin(), acks.end(), m.from) == acks.end()) {
    acks.push_back(m.from);
  }
  if (static_cast<int>(acks.size()) < quorum()) return;
  // A quorum still follows us as of this round, so of every earlier round too.
  for (auto r = readRounds_.begin(); r != readRounds_.end() && r->first <= m.context;) {
    for (const ReadState& rs : r->second.reads) readyReads_.push_back(rs);
    r = readRounds_.erase(r);
  }
}

void RaftCore::broadcastAppend() {
  for (NodeId v : members()) {
    if (v != config_.id) sendAppend(v, SendMode::kCommit);
  }
}

void RaftCore::broadcastHeartbeat() {
  for (NodeId v : members()) {
    if (v == config_.id) continue;
    Message m;
    m.type = MessageType::kHeartbeat;
    m.to = v;
    m.commit = std::min(progress_[v].match, commit_);
    send(std::move(m));
  }
}

void RaftCore::appendAsLeader(Entry e) {
  e.term = term_;
  e.index = lastIndex() + 1;
  log_.push_back(std::move(e));
  Progress& self = progress_[config_.id];
  self.match = lastIndex();
  self.next = lastIndex() + 1;
  maybeCommit();  // a single-member cluster commits on its own
}

Result<Index> RaftCore::propose(std::string data) {
  if (role_ != Role::kLeader) {
    return Status::unavailable(
        lead_ == kNone ? std::string("not the leader, and no leader is known")
                       : "not the leader (the leader is " + std::to_string(lead_) + ")");
  }
  if (transferee_ != kNone) {
    return Status::unavailable("leadership is being transferred to " + std::to_string(transferee_) +
                               "; retry shortly");
  }
  Entry e;
  e.data = std::move(data);
  appendAsLeader(std::move(e));
  // Appends go out at the next ready(), so proposals made between two ready() calls share
  // one message per follower.
  pendingBroadcast_ = true;
  return lastIndex();
}

bool RaftCore::hasReady() const {
  return pendingBroadcast_ || snapshotToReady_ || !readyReads_.empty() || !outbox_.empty() ||
         stable_ < lastIndex() || applied_ < commit_ ||
         HardState{term_, vote_, commit_} != persisted_;
}

Ready RaftCore::ready() {
  if (pendingBroadcast_ && role_ == Role::kLeader) broadcastAppend();
  pendingBroadcast_ = false;
  Ready r;
  HardState hs{term_, vote_, commit_};
  if (hs != persisted_) r.hardState = hs;
  Index applyFrom = applied_;
  if (snapshotToReady_) {
    r.snapshot = snapshot_;
    applyFrom = std::max(applyFrom, snapshot_.index);
  }
  for (Index i = std::max(stable_, snapshot_.index) + 1; i <= lastIndex(); ++i) {
    r.entries.push_back(entryAt(i));
  }
  r.messages = std::move(outbox_);
  outbox_.clear();
  r.reads = std::move(readyReads_);
  readyReads_.clear();
  for (Index i = applyFrom + 1; i <= commit_; ++i) r.committed.push_back(entryAt(i));
  readyStable_ = lastIndex();
  readyApplied_ = commit_;
  readyHardState_ = hs;
  return r;
}

void RaftCore::advance() {
  snapshotToReady_ = false;
  stable_ = std::min(readyStable_, lastIndex());
  applied_ = std::max(applied_, readyApplied_);
  persisted_ = readyHardState_;
}

}  // namespace shoal::raft
