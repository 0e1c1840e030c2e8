// raft_member: one manager's replicated store as a process of its own, for the real-process
// cluster tests (raft_cluster_test) and the TCP benchmark. It runs a ReplicatedStore over
// TcpTransport (mutual TLS, peer ids checked against certificate CNs) with LevelDB storage,
// and answers a small control API on a unix socket:
//
//   GET  /status                  {"id","leader","term","applied","version","size","digest",
//                                  "restores"}
//   POST /put?key=K&value=V[&timeout_ms=T]  create or update Config object K, spec {"v":"V"}
//   POST /bulk?prefix=P&count=N&per=M   create N objects, M per transaction
//   GET  /get?key=K[&local=1]     {"found":bool,"value":V}; linearizable unless local=1
//
// Errors come back as {"message"} with the HTTP status of the Status code (503 for "no
// quorum"). Usage:
//   raft_member --id N --data DIR --listen HOST:PORT --peer ID=HOST:PORT... --ca F --cert F
//               --key F --control SOCKET [--tick MS] [--snapshot-every N]
// Exit: 0 after SIGTERM/SIGINT; 1 when it cannot start (the reason on stderr).
#include <signal.h>

#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <sstream>
#include <string>

#include "kernel/api/api_server.h"
#include "kernel/api/router.h"
#include "kernel/common/log.h"
#include "kernel/manager/replicated_store.h"
#include "kernel/raft/tcp_transport.h"

using namespace std::chrono_literals;
using shoal::Status;
using shoal::api::Request;
using shoal::api::Response;
using shoal::store::Kind;
using shoal::store::Object;
using shoal::store::ReadView;
using shoal::store::Tx;

namespace {

struct Args {
  uint64_t id = 0;
  std::string data, listen, ca, cert, key, control;
  std::map<uint64_t, std::string> peers;
  int tickMs = 100;
  uint64_t snapshotEvery = 10000;
};

[[noreturn]] void fail(const std::string& message) {
  std::fprintf(stderr, "raft_member: %s\n", message.c_str());
  std::exit(1);
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    if (i + 1 >= argc) fail("flag " + flag + " needs a value");
    std::string v = argv[++i];
    if (flag == "--id") {
      a.id = std::stoull(v);
    } else if (flag == "--data") {
      a.data = v;
    } else if (flag == "--listen") {
      a.listen = v;
    } else if (flag == "--peer") {
      auto eq = v.find('=');
      if (eq == std::string::npos) fail("--peer wants ID=HOST:PORT, got " + v);
      a.peers[std::stoull(v.substr(0, eq))] = v.substr(eq + 1);
    } else if (flag == "--ca") {
      a.ca = v;
    } else if (flag == "--cert") {
      a.cert = v;
    } else if (flag == "--key") {
      a.key = v;
    } else if (flag == "--control") {
      a.control = v;
    } else if (flag == "--tick") {
      a.tickMs = std::stoi(v);
    } else if (flag == "--snapshot-every") {
      a.snapshotEvery = std::stoull(v);
    } else {
      fail("unknown flag " + flag);
    }
  }
  if (a.id == 0 || a.data.empty() || a.listen.empty() || a.control.empty()) {
    fail("--id, --data, --listen and --control are required");
  }
  return a;
}

std::string param(const Request& r, const std::string& name) {
  auto it = r.query.find(name);
  return it == r.query.end() ? "" : it->second;
}

std::string jsonString(const std::string& s) {
  Poco::JSON::Object o;
  o.set("s", s);
  std::ostringstream out;
  o.stringify(out);
  std::string t = out.str();  // {"s":"..."}
  return t.substr(5, t.size() - 6);
}

Status put(shoal::manager::ReplicatedStore& store, const std::string& key, const std::string& value,
           std::chrono::milliseconds timeout) {
  return store.update(
      [&](Tx& tx) {
        Object o;
        o.kind = Kind::kConfig;
        o.id = key;
        o.name = key;
        o.spec = "{\"v\":" + jsonString(value) + "}";
        if (auto current = tx.get(Kind::kConfig, key)) {
          o.version = current->version;
          return tx.update(std::move(o));
        }
        return tx.create(std::move(o));
      },
      timeout);
}

}  // namespace

int main(int argc, char** argv) {
  Args args = parse(argc, argv);
  shoal::log::setLevel(shoal::log::Level::kWarn);

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);  // before any thread starts

  auto storage = shoal::raft::RaftStorage::open(args.data);
  if (!storage) fail(storage.status().toString());

  shoal::raft::TcpTransport::Options to;
  to.self = args.id;
  to.listenAddress = args.listen;
  to.caFile = args.ca;
  to.certFile = args.cert;
  to.keyFile = args.key;
  to.requirePeerIdInCN = true;
  shoal::raft::TcpTransport transport(to);
  std::vector<uint64_t> voters{args.id};
  for (const auto& [id, address] : args.peers) {
    transport.addPeer(id, address);
    voters.push_back(id);
  }

  shoal::manager::ReplicatedStoreOptions options;
  options.raft.raft.id = args.id;
  options.raft.raft.voters = voters;
  options.raft.tick = std::chrono::milliseconds(args.tickMs);
  options.raft.snapshotEvery = args.snapshotEvery;
  shoal::SystemRandom random;
  shoal::manager::ReplicatedStore store(options, std::move(storage.value()), transport, random,
                                        shoal::SystemClock::instance());
  if (Status s = store.start(); !s) fail(s.toString());

  shoal::api::Router router;
  router.add("GET", "/status", [&](const Request&) {
    Poco::JSON::Object o;
    o.set("id", store.raft().id());
    o.set("leader", store.raft().leader());
    o.set("term", store.raft().term());
    o.set("applied", store.raft().appliedIndex());
    o.set("version", store.store().version());
    o.set("size", store.store().size());
    o.set("digest", store.store().digest());
    o.set("restores", store.snapshotsRestored());
    std::ostringstream out;
    o.stringify(out);
    return Response::json(out.str());
  });
  router.add("POST", "/put", [&](const Request& r) {
    const long ms = std::atol(param(r, "timeout_ms").c_str());
    Status s = put(store, param(r, "key"), param(r, "value"),
                   std::chrono::milliseconds(ms > 0 ? ms : 5000));
    return s ? Response::json("{}") : Response::error(s);
  });
  router.add("POST", "/bulk", [&](const Request& r) {
    const std::string prefix = param(r, "prefix");
    const long count = std::atol(param(r, "count").c_str());
    const long per = std::max(1L, std::atol(param(r, "per").c_str()));
    for (long at = 0; at < count; at += per) {
      Status s = store.update(
          [&](Tx& tx) {
            for (long i = at; i < std::min(count, at + per); ++i) {
              Object o;
              o.kind = Kind::kConfig;
              o.id = prefix + std::to_string(i);
              o.name = o.id;
              o.spec = "{\"v\":\"" + std::string(100, 'x') + "\"}";
              if (Status c = tx.create(std::move(o)); !c) return c;
            }
            return Status::ok();
          },
          30s);
      if (!s) return Response::error(s);
    }
    return Response::json("{}");
  });
  router.add("GET", "/get", [&](const Request& r) {
    const std::string key = param(r, "key");
    shoal::store::ObjectPtr found;
    auto read = [&](const ReadView& v) { found = v.get(Kind::kConfig, key); };
    if (param(r, "local") == "1") {
      store.view(read);
    } else if (Status s = store.linearizableView(read, 5s); !s) {
      return Response::error(s);
    }
    if (!found) return Response::json("{\"found\":false}");
    return Response::json("{\"found\":true,\"spec\":" + found->spec + "}");
  });
  shoal::api::ApiServer server(shoal::api::ApiServer::Options::unixSocket(args.control, 0600, 8),
                               router);
  if (Status s = server.start(); !s) fail(s.toString());

  int sig = 0;
  sigwait(&signals, &sig);
  server.stop();
  store.stop();
  transport.stop();
  return 0;
}
