#include "tests/dst/sim_cluster.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <sstream>

namespace shoal::dst {

namespace {
const bool kTrace = std::getenv("SHOAL_DST_TRACE") != nullptr;
}  // namespace

using raft::Entry;
using raft::Index;
using raft::Message;
using raft::NodeId;
using raft::Role;

namespace {

// Entry data: "opId put key value" or "opId get key".
std::string encodeOp(const Op& op) {
  return std::to_string(op.id) + (op.put ? " put " : " get ") + op.key +
         (op.put ? " " + op.value : "");
}

struct Decoded {
  uint64_t id = 0;
  bool put = false;
  std::string key, value;
};

std::optional<Decoded> decodeOp(const raft::Entry& e) {
  const std::string& data = e.data;
  // A leader's no-op, or a membership change: not a client op.
  if (data.empty() || e.type != raft::EntryType::kNormal) return std::nullopt;
  std::istringstream in(data);
  Decoded d;
  std::string kind;
  in >> d.id >> kind >> d.key;
  d.put = kind == "put";
  if (d.put) in >> d.value;
  return d;
}

// The state machine's snapshot encoding: "key=value\n" in key order.
std::string encodeKv(const std::map<std::string, std::string>& kv) {
  std::string out;
  for (const auto& [k, v] : kv) out += k + "=" + v + "\n";
  return out;
}

std::map<std::string, std::string> decodeKv(const std::string& data) {
  std::map<std::string, std::string> kv;
  std::istringstream in(data);
  std::string line;
  while (std::getline(in, line)) {
    auto eq = line.find('=');
    kv[line.substr(0, eq)] = line.substr(eq + 1);
  }
  return kv;
}

}  // namespace

SimCluster::SimCluster(int nodes, uint64_t seed, Faults faults) : faults_(faults), random_(seed) {
  for (int i = 1; i <= nodes; ++i) base_.voters.push_back(static_cast<NodeId>(i));
  const int initial = faults_.initialVoters > 0 ? std::min(faults_.initialVoters, nodes) : nodes;
  bootstrap_.assign(base_.voters.begin(), base_.voters.begin() + initial);
  for (NodeId id : base_.voters) {
    Node& n = nodes_[id];
    n.id = id;
    boot(n);
  }
}

Faults Faults::forSeed(uint64_t seed) {
  shoal::SeededRandom r(seed ^ 0x5eed5eedULL);
  Faults f;
  f.drop = r.real() * 0.2;
  f.duplicate = r.real() * 0.05;
  f.minDelay = 1;
  f.maxDelay = 1 + static_cast<int>(r.uniform(6));
  f.crash = r.real() * 0.01;
  f.restart = 0.02 + r.real() * 0.05;
  f.partition = r.real() * 0.01;
  f.oneWay = r.real() * 0.005;
  f.heal = 0.01 + r.real() * 0.04;
  f.clientOp = 0.2 + r.real() * 0.6;
  // Half the seeds compact often, so lagging members catch up by InstallSnapshot.
  f.snapshotEvery = r.real() < 0.5 ? 0 : 10 + static_cast<int>(r.uniform(60));
  f.transfer = r.real() * 0.01;
  f.readIndex = r.real();
  f.pause = r.real() * 0.01;
  // A third of the seeds change membership: nodes join as learners or voters, are promoted
  // and removed (ids are never reused).
  if (r.real() < 0.33) {
    f.membership = 0.002 + r.real() * 0.01;
    f.initialVoters = 2 + static_cast<int>(r.uniform(2));
  }
  // Half the seeds lose un-fsynced writes in some of their crashes; torn writes in all.
  f.powerLoss = r.real() < 0.5 ? r.real() : 0;
  f.tornWrite = r.real() * 0.3;
  return f;
}

void SimCluster::boot(Node& n) {
  raft::RaftConfig cfg = base_;
  cfg.id = n.id;
  // Bootstrap members start with the initial membership; the others join empty and learn it.
  bool founding = std::find(bootstrap_.begin(), bootstrap_.end(), n.id) != bootstrap_.end();
  cfg.voters = founding ? bootstrap_ : std::vector<NodeId>{};
  raft::Restored restored;
  restored.hardState = n.hardState;
  restored.snapshot = n.snapshot;
  restored.entries = n.disk;
  // The state machine is in memory: rebuilt from the snapshot, then the log.
  n.kv.clear();
  n.applied.clear();
  n.toServe.clear();
  n.confirmed.clear();
  if (n.snapshot) {
    n.kv = decodeKv(n.snapshot->data);
    n.applied.assign(committed_.begin(), committed_.begin() + n.snapshot->index);
    restored.applied = n.snapshot->index;
  }
  n.core = std::make_unique<raft::RaftCore>(cfg, random_, std::move(restored));
  n.up = true;
  n.lastRole = Role::kFollower;
  ++n.epoch;
}

raft::RaftCore* SimCluster::core(NodeId id) {
  Node& n = nodes_.at(id);
  return n.up ? n.core.get() : nullptr;
}

void SimCluster::crash(NodeId id, bool powerLoss) {
  Node& n = nodes_.at(id);
  if (!n.up) return;
  n.up = false;
  n.core.reset();
  if (powerLoss && !(n.hardState == n.syncedHardState)) {
    n.hardState = n.syncedHardState;
    ++diskLosses_;
  }
  if (kTrace)
    std::fprintf(stderr, "t%lld node %llu crashes\n", (long long)now_, (unsigned long long)id);
  mix(1000 + id);
}

void SimCluster::restart(NodeId id) {
  Node& n = nodes_.at(id);
  if (n.up) return;
  boot(n);
  if (kTrace) {
    std::fprintf(stderr,
                 "t%lld node %llu restarts: hs commit %llu disk %zu snap %llu -> commit %llu\n",
                 (long long)now_, (unsigned long long)id, (unsigned long long)n.hardState.commit,
                 n.disk.size(), (unsigned long long)(n.snapshot ? n.snapshot->index : 0),
                 (unsigned long long)n.core->commitIndex());
  }
  mix(2000 + id);
}

void SimCluster::isolate(NodeId id) {
  for (NodeId other : base_.voters) {
    if (other == id) continue;
    blocked_.insert({id, other});
    blocked_.insert({other, id});
  }
}

void SimCluster::healAll() { blocked_.clear(); }

Result<Index> SimCluster::propose(NodeId id, const std::string& data) {
  raft::RaftCore* c = core(id);
  if (c == nullptr) return Status::unavailable("node is down");
  return c->propose(data);
}

NodeId SimCluster::leader() const {
  NodeId best = 0;
  raft::Term bestTerm = 0;
  for (const auto& [id, n] : nodes_) {
    if (n.up && n.core->role() == Role::kLeader && n.core->term() >= bestTerm) {
      best = id;
      bestTerm = n.core->term();
    }
  }
  return best;
}

std::size_t SimCluster::ackedCount() const {
  std::size_t n = 0;
  for (const auto& [id, op] : ops_) n += op.completed >= 0;
  return n;
}

void SimCluster::fail(const std::string& what) {
  if (failure_.empty()) failure_ = "tick " + std::to_string(now_) + ": " + what;
}

void SimCluster::applyEntry(Node& n, const Entry& e) {
  if (kTrace && e.type == raft::EntryType::kConfChange) {
    std::fprintf(stderr, "t%lld node %llu applies conf %s at %llu/%llu\n", (long long)now_,
                 (unsigned long long)n.id, e.data.c_str(), (unsigned long long)e.index,
                 (unsigned long long)e.term);
  }
  if (!n.applied.empty() && n.applied.back().index + 1 != e.index) {
    fail("node " + std::to_string(n.id) + " applied index " + std::to_string(e.index) + " after " +
         std::to_string(n.applied.back().index));
  }
  n.applied.push_back(e);
  // State machine safety: every node applies the same entry at each index.
  if (e.index <= committed_.size()) {
    if (!(committed_[e.index - 1] == e)) {
      fail("node " + std::to_string(n.id) + " applied a different entry at index " +
           std::to_string(e.index));
    }
  } else if (e.index == committed_.size() + 1) {
    committed_.push_back(e);
    commitTerm_.push_back(n.core->term());
  } else {
    fail("applied index " + std::to_string(e.index) + " beyond the committed log");
  }
  mix(e.index * 31 + e.term);
  auto d = decodeOp(e);
  if (!d) return;
  std::string result;
  if (d->put) {
    n.kv[d->key] = d->value;
  } else {
    auto it = n.kv.find(d->key);
    result = it == n.kv.end() ? "" : it->second;
  }
  // The proposer acknowledges, if it has not restarted since proposing.
  auto op = ops_.find(d->id);
  if (op != ops_.end() && op->second.node == n.id && op->second.epoch == n.epoch &&
      op->second.completed < 0) {
    op->second.completed = now_;
    op->second.result = result;
  }
}

void SimCluster::process(Node& n, CrashPoint crashAt) {
  while (n.up && n.core->hasReady()) {
    raft::Ready rd = n.core->ready();
    if (crashAt == CrashPoint::kDuringPersist) {  // torn: the batch never made it
      ++diskLosses_;
      crash(n.id, true);
      return;
    }
    // 1. Persist, as RaftStorage does: one batch, synced unless it only moves the commit
    // index (same term and vote, no entries, no snapshot). A synced batch makes everything
    // written before it durable too (one write-ahead log).
    const bool commitOnly = rd.hardState && rd.entries.empty() && !rd.snapshot &&
                            rd.hardState->term == n.hardState.term &&
                            rd.hardState->vote == n.hardState.vote;
    if (rd.hardState) n.hardState = *rd.hardState;
    if (rd.snapshot) {
      n.snapshot = *rd.snapshot;
      n.disk.clear();
    }
    persistEntries(n, rd.entries);
    if (!commitOnly && (rd.hardState || rd.snapshot || !rd.entries.empty())) {
      n.syncedHardState = n.hardState;
    }
    if (crashAt == CrashPoint::kAfterPersist) {  // persisted, but nothing sent or applied
      crash(n.id, random_.real() < faults_.powerLoss);
      return;
    }
    // 2. Send.
    for (Message& m : rd.messages) {
      mix(static_cast<uint64_t>(m.type) * 7 + m.to * 131 + m.term);
      if (random_.real() < faults_.drop) continue;
      int copies = random_.real() < faults_.duplicate ? 2 : 1;
      for (int c = 0; c < copies; ++c) {
        int64_t delay =
            faults_.minDelay +
            static_cast<int64_t>(random_.uniform(faults_.maxDelay - faults_.minDelay + 1));
        network_.push_back({now_ + delay, random_.next(), m});
      }
    }
    // 3. Apply.
    if (rd.snapshot) installSnapshot(n, *rd.snapshot);
    for (const Entry& e : rd.committed) applyEntry(n, e);
    n.toServe.insert(n.toServe.end(), rd.reads.begin(), rd.reads.end());
    n.confirmed.insert(n.confirmed.end(), rd.reads.begin(), rd.reads.end());
    serveReads(n);
    n.core->advance();
    // 4. Compact now and then, as the manager does every N entries.
    if (faults_.snapshotEvery > 0 &&
        n.core->appliedSinceSnapshot() >= static_cast<raft::Index>(faults_.snapshotEvery)) {
      auto snap = n.core->compact(n.core->appliedIndex(), encodeKv(n.kv));
      if (!snap) {
        fail("compaction failed: " + snap.status().message());
        return;
      }
      n.snapshot = *snap;
      n.syncedHardState = n.hardState;  // compaction is a synced batch
      while (!n.disk.empty() && n.disk.front().index <= snap->index) n.disk.erase(n.disk.begin());
    }
  }
}

void SimCluster::serveReads(Node& n) {
  auto ready = [&](const raft::ReadState& r) { return r.index <= n.applied.size(); };
  for (const raft::ReadState& r : n.toServe) {
    if (!ready(r)) continue;
    auto op = ops_.find(r.id);
    if (op == ops_.end() || op->second.node != n.id || op->second.epoch != n.epoch) continue;
    auto it = n.kv.find(op->second.key);
    op->second.result = it == n.kv.end() ? "" : it->second;
    op->second.prefix = n.applied.size();
    op->second.completed = now_;
    mix(r.id * 7919 + r.index);
  }
  n.toServe.erase(std::remove_if(n.toServe.begin(), n.toServe.end(), ready), n.toServe.end());
}

void SimCluster::persistEntries(Node& n, const std::vector<Entry>& entries) {
  if (entries.empty()) return;
  // Truncate at the first new entry's index, then append.
  while (!n.disk.empty() && n.disk.back().index >= entries.front().index) n.disk.pop_back();
  Index expected =
      n.disk.empty() ? (n.snapshot ? n.snapshot->index : 0) + 1 : n.disk.back().index + 1;
  if (entries.front().index != expected) {
    fail("node " + std::to_string(n.id) + " was asked to persist entry " +
         std::to_string(entries.front().index) + " after " + std::to_string(expected - 1));
  }
  n.disk.insert(n.disk.end(), entries.begin(), entries.end());
}

void SimCluster::installSnapshot(Node& n, const raft::Snapshot& s) {
  ++snapshotsInstalled_;
  if (s.index > committed_.size()) {
    fail("node " + std::to_string(n.id) + " got a snapshot at " + std::to_string(s.index) +
         " beyond the committed log");
    return;
  }
  // The snapshot must be exactly the state the committed log produces up to its index.
  std::map<std::string, std::string> replay;
  for (std::size_t i = 0; i < s.index; ++i) {
    auto d = decodeOp(committed_[i]);
    if (d && d->put) replay[d->key] = d->value;
  }
  if (decodeKv(s.data) != replay || committed_[s.index - 1].term != s.term) {
    fail("node " + std::to_string(n.id) + " got a snapshot at " + std::to_string(s.index) +
         " that differs from the committed log");
    return;
  }
  n.kv = replay;
  n.applied.assign(committed_.begin(), committed_.begin() + s.index);
  mix(s.index * 1000003);
}

void SimCluster::deliver() {
  std::vector<InFlight> due;
  std::vector<InFlight> later;
  for (auto& f : network_) {
    // A stalled node reads nothing; its messages wait in the socket buffer.
    bool stalled = nodes_.at(f.message.to).pausedUntil > now_;
    (f.deliverAt <= now_ && !stalled ? due : later).push_back(std::move(f));
  }
  network_ = std::move(later);
  std::sort(due.begin(), due.end(), [](const InFlight& a, const InFlight& b) {
    return a.deliverAt != b.deliverAt ? a.deliverAt < b.deliverAt : a.order < b.order;
  });
  for (auto& f : due) {
    const Message& m = f.message;
    if (blocked_.count({m.from, m.to})) continue;
    Node& n = nodes_.at(m.to);
    if (!n.up) continue;
    if (kTrace && std::getenv("SHOAL_DST_TRACE_NODE") &&
        m.to == std::strtoull(std::getenv("SHOAL_DST_TRACE_NODE"), nullptr, 10)) {
      std::fprintf(stderr,
                   "t%lld %llu->%llu %s term %llu idx %llu/%llu n=%zu commit %llu%s | last %llu "
                   "commit %llu\n",
                   (long long)now_, (unsigned long long)m.from, (unsigned long long)m.to,
                   raft::messageTypeName(m.type), (unsigned long long)m.term,
                   (unsigned long long)m.index, (unsigned long long)m.logTerm, m.entries.size(),
                   (unsigned long long)m.commit, m.reject ? " reject" : "",
                   (unsigned long long)n.core->lastIndex(),
                   (unsigned long long)n.core->commitIndex());
    }
    n.core->step(m);
    process(n);
    checkLeaders();
  }
}

void SimCluster::checkLeaders() {
  for (auto& [id, n] : nodes_) {
    if (!n.up) continue;
    Role role = n.core->role();
    if (role == Role::kLeader && n.lastRole != Role::kLeader) {
      ++leaderChanges_;
      if (kTrace) {
        std::string v;
        for (auto x : n.core->voters()) v += std::to_string(x) + ",";
        std::fprintf(stderr, "t%lld node %llu leader term %llu last %llu commit %llu voters %s\n",
                     (long long)now_, (unsigned long long)id, (unsigned long long)n.core->term(),
                     (unsigned long long)n.core->lastIndex(),
                     (unsigned long long)n.core->commitIndex(), v.c_str());
      }
      auto [it, fresh] = leaders_.emplace(n.core->term(), id);
      if (!fresh && it->second != id) {
        fail("two leaders in term " + std::to_string(n.core->term()) + ": " +
             std::to_string(it->second) + " and " + std::to_string(id));
      }
      // Leader completeness: a new leader holds every committed entry.
      for (const Entry& e : committed_) {
        if (e.index < n.core->snapshot().index) continue;  // inside its snapshot
        // Only leaders of later terms than the commit's must hold it; a stale election
        // (delayed votes for an older term) may still complete after a newer term committed.
        if (commitTerm_[e.index - 1] >= n.core->term()) continue;
        if (n.core->termAt(e.index) != e.term) {
          fail("leader " + std::to_string(id) + " of term " + std::to_string(n.core->term()) +
               " lacks committed entry " + std::to_string(e.index));
          break;
        }
      }
    }
    n.lastRole = role;
  }
}

void SimCluster::checkLogMatching() {
  std::vector<const Node*> live;
  for (const auto& [id, n] : nodes_) {
    if (n.up) live.push_back(&n);
  }
  for (std::size_t a = 0; a < live.size(); ++a) {
    for (std::size_t b = a + 1; b < live.size(); ++b) {
      const raft::RaftCore& ca = *live[a]->core;
      const raft::RaftCore& cb = *live[b]->core;
      const Index lo = std::max(ca.firstIndex(), cb.firstIndex());
      const Index top = std::min(ca.lastIndex(), cb.lastIndex());
      auto entry = [](const raft::RaftCore& c, Index i) -> const Entry& {
        return c.log()[i - c.firstIndex()];
      };
      // The highest index where both have an entry of the same term...
      Index hi = 0;
      for (Index i = top; i >= lo && i > 0; --i) {
        if (ca.termAt(i) == cb.termAt(i)) {
          hi = i;
          break;
        }
      }
      // ...implies the logs are identical up to it.
      for (Index i = lo; hi != 0 && i <= hi; ++i) {
        if (!(entry(ca, i) == entry(cb, i))) {
          fail("log matching violated between nodes " + std::to_string(live[a]->id) + " and " +
               std::to_string(live[b]->id) + " at index " + std::to_string(i));
          return;
        }
      }
    }
  }
}

void SimCluster::injectFaults() {
  auto pick = [&](bool wantUp) -> NodeId {
    std::vector<NodeId> c;
    for (const auto& [id, n] : nodes_) {
      if (n.up == wantUp) c.push_back(id);
    }
    return c.empty() ? 0 : c[random_.uniform(c.size())];
  };
  if (random_.real() < faults_.crash) {
    if (NodeId id = pick(true)) {
      const double how = random_.real();
      if (how < faults_.tornWrite) {
        process(nodes_.at(id), CrashPoint::kDuringPersist);
        crash(id, true);
      } else if (how < 0.5) {
        process(nodes_.at(id), CrashPoint::kAfterPersist);  // between persisting and sending
        crash(id, random_.real() < faults_.powerLoss);
      } else {
        crash(id, random_.real() < faults_.powerLoss);
      }
    }
  }
  if (random_.real() < faults_.restart) {
    if (NodeId id = pick(false)) restart(id);
  }
  if (random_.real() < faults_.partition) {
    blocked_.clear();
    std::vector<NodeId> side;
    for (NodeId id : base_.voters) {
      if (random_.real() < 0.5) side.push_back(id);
    }
    for (NodeId a : side) {
      for (NodeId b : base_.voters) {
        if (std::find(side.begin(), side.end(), b) == side.end()) {
          blocked_.insert({a, b});
          blocked_.insert({b, a});
        }
      }
    }
    mix(3000 + side.size());
  }
  if (random_.real() < faults_.oneWay) {
    NodeId a = base_.voters[random_.uniform(base_.voters.size())];
    NodeId b = base_.voters[random_.uniform(base_.voters.size())];
    if (a != b) blocked_.insert({a, b});
  }
  if (random_.real() < faults_.heal) blocked_.clear();
  if (random_.real() < faults_.pause) {
    if (NodeId id = pick(true)) {
      nodes_.at(id).pausedUntil =
          now_ + 1 + static_cast<int64_t>(random_.uniform(faults_.maxPause));
      mix(5000 + id);
    }
  }
  if (random_.real() < faults_.membership) {
    if (NodeId l = leader()) {
      raft::RaftCore& c = *nodes_.at(l).core;
      NodeId who = base_.voters[random_.uniform(base_.voters.size())];
      raft::ConfChange cc;
      cc.node = who;
      const bool voter = c.isVoter(who);
      const bool learner =
          std::find(c.learners().begin(), c.learners().end(), who) != c.learners().end();
      if (voter || learner) {
        // Remove it, or promote a learner; keep at least two voters so progress stays likely.
        cc.type = learner && random_.real() < 0.7 ? raft::ConfChange::Type::kAddVoter
                                                  : raft::ConfChange::Type::kRemoveVoter;
        if (cc.type == raft::ConfChange::Type::kRemoveVoter && voter && c.voters().size() <= 2) {
          cc.type = raft::ConfChange::Type::kAddVoter;  // refused: already a voter
        }
      } else {
        cc.type = random_.real() < 0.5 ? raft::ConfChange::Type::kAddLearner
                                       : raft::ConfChange::Type::kAddVoter;
      }
      if (!removed_.count(who) && c.proposeConfChange(cc)) {
        if (kTrace) {
          std::fprintf(stderr, "t%lld leader %llu proposes %s at %llu\n", (long long)now_,
                       (unsigned long long)l, cc.encode().c_str(),
                       (unsigned long long)c.lastIndex());
        }
        ++membershipChanges_;
        if (cc.type == raft::ConfChange::Type::kRemoveVoter) removed_.insert(who);
        mix(6000 + who * 3 + static_cast<uint64_t>(cc.type));
      }
    }
  }
  if (random_.real() < faults_.transfer) {
    if (NodeId l = leader()) {
      NodeId to = base_.voters[random_.uniform(base_.voters.size())];
      nodes_.at(l).core->transferLeadership(to);
      mix(4000 + to);
    }
  }
}

void SimCluster::clientStep() {
  if (random_.real() >= faults_.clientOp) return;
  // Clients find the leader the way a real client does: they ask around, and may be wrong.
  std::vector<NodeId> up;
  for (const auto& [id, n] : nodes_) {
    if (n.up) up.push_back(id);
  }
  if (up.empty()) return;
  NodeId target = up[random_.uniform(up.size())];
  NodeId hint = nodes_.at(target).core->leader();
  if (hint != raft::kNone && nodes_.at(hint).up && random_.real() < 0.9) target = hint;
  Op op;
  op.id = nextOp_++;
  op.put = random_.real() < 0.6;
  op.key = "k" + std::to_string(random_.uniform(3));
  op.value = "v" + std::to_string(op.id);
  op.node = target;
  op.epoch = nodes_.at(target).epoch;
  op.invoked = now_;
  if (!op.put && random_.real() < faults_.readIndex) {
    op.viaReadIndex = true;
    if (nodes_.at(target).core->readIndex(op.id).isOk()) {
      ops_[op.id] = op;
      mix(op.id * 19);
    }
    return;
  }
  auto idx = nodes_.at(target).core->propose(encodeOp(op));
  if (idx) {
    ops_[op.id] = op;
    mix(op.id * 17 + *idx);
  }
}

void SimCluster::tick() {
  ++now_;
  for (auto& [id, n] : nodes_) {
    if (!n.up || n.pausedUntil > now_) continue;
    n.core->tick();
    process(n);
  }
  checkLeaders();
  deliver();
  for (auto& [id, n] : nodes_) process(n);
  checkLeaders();
  if (now_ % 25 == 0) checkLogMatching();
}

void SimCluster::run(int ticks) {
  for (int i = 0; i < ticks && !failed(); ++i) {
    injectFaults();
    clientStep();
    tick();
    for (auto& [id, n] : nodes_) process(n);
  }
}

bool SimCluster::settle(int ticks) {
  healAll();
  for (NodeId id : base_.voters) restart(id);
  for (auto& [id, n] : nodes_) n.pausedUntil = 0;
  faults_ = Faults{};
  faults_.clientOp = 0;
  faults_.minDelay = 1;
  faults_.maxDelay = 2;
  // Liveness: a leader emerges and a fresh entry reaches every node.
  uint64_t marker = 0;
  for (int i = 0; i < ticks && !failed(); ++i) {
    tick();
    NodeId l = leader();
    // A client retries: a marker proposed to a leader that was already deposed is lost.
    if (marker != 0 && ops_.at(marker).completed < 0 && now_ - ops_.at(marker).invoked > 100) {
      marker = 0;
    }
    if (marker == 0 && l != 0) {
      Op op;
      op.id = nextOp_++;
      op.put = true;
      op.key = "settle";
      op.value = "done";
      op.node = l;
      op.epoch = nodes_.at(l).epoch;
      op.invoked = now_;
      if (nodes_.at(l).core->propose(encodeOp(op))) {
        ops_[op.id] = op;
        marker = op.id;
      }
    }
    if (marker != 0 && ops_.at(marker).completed >= 0 && leader() != 0) {
      // Every current member (per the leader) has applied everything; removed nodes and
      // nodes that never joined are left behind by design.
      const raft::RaftCore& lc = *nodes_.at(leader()).core;
      bool everywhere = true;
      for (const auto& [id, n] : nodes_) {
        const bool learner =
            std::find(lc.learners().begin(), lc.learners().end(), id) != lc.learners().end();
        if (lc.isVoter(id) || learner) {
          everywhere = everywhere && n.applied.size() == committed_.size();
        }
      }
      if (everywhere) {
        checkLogMatching();
        return !failed();
      }
    }
  }
  if (!failed()) {
    std::string state;
    for (const auto& [id, n] : nodes_) {
      state += " [" + std::to_string(id) + ": " + raft::roleName(n.core->role()) + " term " +
               std::to_string(n.core->term()) + " lead " + std::to_string(n.core->leader()) +
               " voters " +
               [&] {
                 std::string v;
                 for (auto x : n.core->voters()) v += std::to_string(x) + ",";
                 v += " learners ";
                 for (auto x : n.core->learners()) v += std::to_string(x) + ",";
                 return v;
               }() +
               " last " + std::to_string(n.core->lastIndex()) + "/" +
               std::to_string(n.core->termAt(n.core->lastIndex())) + " commit " +
               std::to_string(n.core->commitIndex()) + "]";
    }
    for (const auto& [id, n] : nodes_)
      state += " applied(" + std::to_string(id) + ")=" + std::to_string(n.applied.size());
    state += " committed=" + std::to_string(committed_.size()) +
             " marker=" + std::to_string(marker) +
             (marker ? " acked=" + std::to_string(ops_.at(marker).completed) : "");
    fail("no progress within " + std::to_string(ticks) + " ticks after healing:" + state);
  }
  return false;
}

bool SimCluster::checkHistory() {
  if (failed()) return false;
  // Position of every op in the committed log.
  std::map<uint64_t, std::size_t> pos;
  std::map<std::string, std::string> kv;
  for (std::size_t i = 0; i < committed_.size(); ++i) {
    auto d = decodeOp(committed_[i]);
    if (!d) continue;
    if (!pos.emplace(d->id, i).second) {
      fail("op " + std::to_string(d->id) + " is in the committed log twice");
      return false;
    }
    std::string seen = kv.count(d->key) ? kv[d->key] : "";
    if (d->put) kv[d->key] = d->value;
    auto op = ops_.find(d->id);
    // The sequential specification: an acknowledged read returns the latest write before it.
    if (op != ops_.end() && op->second.completed >= 0 && !op->second.put &&
        op->second.result != seen) {
      fail("op " + std::to_string(d->id) + " read \"" + op->second.result + "\", the log says \"" +
           seen + "\"");
      return false;
    }
  }
  std::vector<const Op*> acked;
  for (const auto& [id, op] : ops_) {
    if (op.completed < 0 || op.viaReadIndex) continue;
    if (!pos.count(id)) {
      fail("acknowledged op " + std::to_string(id) + " is not in the committed log");
      return false;
    }
    acked.push_back(&op);
  }
  // Read-index reads sit between log positions: one served at applied index P is placed
  // after the first P entries. It must see every op acknowledged before it began, none that
  // began after it ended, and exactly the state of those P entries.
  for (const auto& [id, r] : ops_) {
    if (!r.viaReadIndex || r.completed < 0) continue;
    std::map<std::string, std::string> state;
    for (std::size_t i = 0; i < r.prefix && i < committed_.size(); ++i) {
      auto d = decodeOp(committed_[i]);
      if (d && d->put) state[d->key] = d->value;
    }
    std::string expect = state.count(r.key) ? state[r.key] : "";
    if (r.result != expect) {
      fail("read-index op " + std::to_string(id) + " read \"" + r.result + "\" at index " +
           std::to_string(r.prefix) + ", where the log says \"" + expect + "\"");
      return false;
    }
    for (const auto& [oid, o] : ops_) {
      if (o.completed >= 0 && o.completed < r.invoked) {
        bool before =
            o.viaReadIndex ? o.prefix <= r.prefix : pos.count(oid) && pos.at(oid) < r.prefix;
        if (!before) {
          fail("read-index op " + std::to_string(id) + " (served at index " +
               std::to_string(r.prefix) + ") misses op " + std::to_string(oid) +
               ", acknowledged before it began");
          return false;
        }
      }
      if (!o.viaReadIndex && pos.count(oid) && o.invoked > r.completed && pos.at(oid) < r.prefix) {
        fail("read-index op " + std::to_string(id) + " saw op " + std::to_string(oid) +
             ", which began after it ended");
        return false;
      }
    }
  }
  // Real-time order: an op acknowledged before another was invoked comes first in the log.
  for (const Op* a : acked) {
    if (a->viaReadIndex) continue;
    for (const auto& [id, b] : ops_) {
      if (!pos.count(id) || b.invoked <= a->completed) continue;
      if (pos.at(a->id) >= pos.at(id)) {
        fail("op " + std::to_string(a->id) + " was acknowledged before op " + std::to_string(id) +
             " began, but comes after it in the log");
        return false;
      }
    }
  }
  return true;
}

}  // namespace shoal::dst
