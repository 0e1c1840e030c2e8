// runtime-sim: a simulated runtime with no containers, for scale benchmarks and manager tests.
// Tasks "run" as timers on this node, with a configurable start delay, run time, exit code,
// stop delay and failure rate; their state survives an unload (see README.md for behaviour).
//
// Design, in short:
//  - Every task lives in one of kShardCount hash maps (shard = FNV-1a of the task id), all
//    guarded by mu_. Ops arrive on the host's thread (serialised by the host); ONE timer thread
//    fires due transitions from a min-heap, re-posts held-back events and writes changed shards.
//    The heap uses lazy deletion: an entry whose token no longer matches its task is skipped, so
//    rescheduling is O(log n) and nothing ever scans all tasks on an op's path.
//  - Every event is posted with mu_ held, so the events of a task leave in transition order
//    whichever thread made the transition. host->post answering SHOAL_ENOMEM (the host's queue is
//    full) loses nothing: the event and every later one wait in outbox_, in order, and the timer
//    thread posts them again. SHOAL_ECANCELED (fini began) drops them for good.
//  - Time: transitions are stamped with host->now_ns and persisted as wall-clock stamps plus
//    durations, so a reload can tell what "happened" while the plugin was not loaded. The timer
//    heap itself runs on host->monotonic_ns.
//  - Persistence: shard i is root/tasks-XX.json (XX = i in hex), rewritten as a whole (tmp +
//    fsync + rename, then fsync of the directory) by the timer thread at most every 100 ms, and
//    only for shards that changed; fini writes what is left. A corrupt file fails init.
#include <shoal/runtime.h>
#include <shoal/plugin.hpp>
#include <shoal_plugins/config.hpp>
#include <shoal_plugins/json.hpp>
#include <shoal_plugins/node_info.hpp>
#include <shoal_plugins/time.hpp>

#include <Poco/Dynamic/Var.h>
#include <Poco/Exception.h>
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <deque>
#include <exception>
#include <limits>
#include <memory>
#include <mutex>
#include <queue>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <typeinfo>
#include <unordered_map>
#include <utility>
#include <vector>

namespace {

using shoal::plugins::addNodeFacts;
using shoal::plugins::configError;
using shoal::plugins::parseConfig;
using shoal::plugins::rfc3339;
using shoal::plugins::rootValue;
using shoal::plugins::toJson;
using shoal::sdk::Error;
using shoal::sdk::view;

constexpr char kName[] = "runtime-sim";
constexpr char kVersion[] = "0.1.0";
constexpr char kDefaultRoot[] = "/var/lib/shoal/runtime-sim";
constexpr char kStateSchema[] = "shoal.runtime-sim-state/v1";

// A day: long enough for any test, and far from overflowing when turned into nanoseconds.
constexpr int64_t kMaxDelayMs = 24 * 60 * 60 * 1000;
constexpr int64_t kNsPerMs = 1000 * 1000;
// The dirty shards are one uint64_t bit mask, hence 64.
constexpr std::size_t kShardCount = 64;
constexpr std::size_t kMaxLogLines = 1000;
constexpr int64_t kFlushIntervalNs = 100 * kNsPerMs;
constexpr int64_t kFlushRetryNs = 1000 * kNsPerMs;  // after a failed write
constexpr int64_t kMaxSleepNs = 100 * kNsPerMs;     // so a jump of the host's clock is noticed
constexpr int64_t kOutboxRetryNs = 2 * kNsPerMs;
constexpr std::size_t kTimerBatch = 1024;  // timers fired per hold of mu_, so ops get in
constexpr int kKilledExitCode = 137;       // 128 + SIGKILL
constexpr int kFailureExitCode = 1;
constexpr int64_t kFirstPid = 1000;
constexpr int64_t kNever = std::numeric_limits<int64_t>::max();
constexpr int64_t kAwake = std::numeric_limits<int64_t>::min();

// ---- small helpers ------------------------------------------------------------------------

// A JSON integer (booleans excluded: Poco counts them as integers).
int64_t integerValue(const Poco::JSON::Object& config, const std::string& key) {
  const Poco::Dynamic::Var& value = config.get(key);
  if (!value.isInteger() || value.isBoolean()) {
    configError(kName, "config key \"" + key + "\" must be an integer");
  }
  if (!value.isSigned()) {
    // Poco keeps integers above INT64_MAX unsigned; none of those is a sensible setting.
    const auto big = value.convert<Poco::UInt64>();
    if (big > static_cast<Poco::UInt64>(INT64_MAX)) {
      configError(kName, "config key \"" + key + "\" is out of range");
    }
    return static_cast<int64_t>(big);
  }
  return value.convert<Poco::Int64>();
}

// A JSON number, integer or not (booleans excluded).
double numberValue(const Poco::JSON::Object& config, const std::string& key) {
  const Poco::Dynamic::Var& value = config.get(key);
  if (!value.isNumeric() || value.isBoolean()) {
    configError(kName, "config key \"" + key + "\" must be a number");
  }
  return value.convert<double>();
}

int64_t delayConfig(const Poco::JSON::Object& config, const std::string& key) {
  if (!config.has(key)) return 0;
  const int64_t ms = integerValue(config, key);
  if (ms < 0 || ms > kMaxDelayMs) {
    configError(kName,
                "config key \"" + key + "\" must be between 0 and " + std::to_string(kMaxDelayMs));
  }
  return ms;
}

std::string quoted(std::string_view s) { return "\"" + std::string(s) + "\""; }

void appendInt(std::string& out, int64_t v) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

void appendJsonString(std::string& out, std::string_view s) {
  out += '"';
  for (char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          static const char kHex[] = "0123456789abcdef";
          out += "\\u00";
          out += kHex[(c >> 4) & 0xf];
          out += kHex[c & 0xf];
        } else {
          out += c;
        }
    }
  }
  out += '"';
}

// FNV-1a: stable across builds and runs, since it names the file a task is kept in.
std::size_t shardOf(std::string_view id) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : id) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return static_cast<std::size_t>(h % kShardCount);
}

std::string errnoText(int err) { return std::strerror(err); }

// Writes `text` to `path` so that a crash leaves either the old or the new file: a temporary
// beside it, fsync, rename. The caller fsyncs the directory once for a batch of files.
bool writeAtomically(const std::string& path, const std::string& text, std::string* error) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    *error = "cannot create " + tmp + ": " + errnoText(errno);
    return false;
  }
  const char* p = text.data();
  std::size_t left = text.size();
  while (left > 0) {
    const ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      *error = "cannot write " + tmp + ": " + errnoText(n < 0 ? errno : EIO);
      ::close(fd);
      ::unlink(tmp.c_str());
      return false;
    }
    p += n;
    left -= static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) {
    *error = "cannot fsync " + tmp + ": " + errnoText(errno);
    ::close(fd);
    ::unlink(tmp.c_str());
    return false;
  }
  if (::close(fd) != 0) {
    *error = "cannot close " + tmp + ": " + errnoText(errno);
    ::unlink(tmp.c_str());
    return false;
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    *error = "cannot rename " + tmp + " to " + path + ": " + errnoText(errno);
    ::unlink(tmp.c_str());
    return false;
  }
  return true;
}

bool fsyncDirectory(const std::string& dir, std::string* error) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    *error = "cannot open " + dir + ": " + errnoText(errno);
    return false;
  }
  const bool ok = ::fsync(fd) == 0;
  if (!ok) *error = "cannot fsync " + dir + ": " + errnoText(errno);
  ::close(fd);
  return ok;
}

// The whole file; false with *missing = true when it does not exist.
bool readWholeFile(const std::string& path, std::string* text, bool* missing, std::string* error) {
  *missing = false;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) {
      *missing = true;
    } else {
      *error = "cannot open " + path + ": " + errnoText(errno);
    }
    return false;
  }
  text->clear();
  char buf[65536];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      *error = "cannot read " + path + ": " + errnoText(errno);
      ::close(fd);
      return false;
    }
    if (n == 0) break;
    text->append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return true;
}

// ---- the simulated task ---------------------------------------------------------------------

enum class State { kPreparing, kReady, kStarting, kRunning, kComplete, kFailed, kShutdown };

const char* stateName(State s) {
  switch (s) {
    case State::kPreparing:
      return "preparing";
    case State::kReady:
      return "ready";
    case State::kStarting:
      return "starting";
    case State::kRunning:
      return "running";
    case State::kComplete:
      return "complete";
    case State::kFailed:
      return "failed";
    case State::kShutdown:
      return "shutdown";
  }
  return "?";
}

bool parseState(std::string_view name, State* out) {
  for (State s : {State::kPreparing, State::kReady, State::kStarting, State::kRunning,
                  State::kComplete, State::kFailed, State::kShutdown}) {
    if (name == stateName(s)) {
      *out = s;
      return true;
    }
  }
  return false;
}

bool hasExited(State s) {
  return s == State::kComplete || s == State::kFailed || s == State::kShutdown;
}

// What the timer does next to a task.
enum class Next { kNone, kRunning, kExit, kFail, kStop };

struct LogLine {
  int64_t ts = 0;
  std::string line;
};

struct Follower {
  uint64_t op = 0;
  bool timestamps = false;
};

// One simulated task. Wall-clock stamps (_ns) come from host->now_ns; they and the durations
// are what is persisted, so a reload can replay what happened while nothing was loaded.
struct Task {
  std::string id;
  std::size_t shard = 0;
  int64_t pid = 0;
  State state = State::kPreparing;
  int exit_code = 0;
  std::string message;
  int64_t timestamp_ns = 0;  // when the current state was entered

  // Behaviour, fixed at prepare from the config and SIM_* variables.
  std::string image;
  int64_t start_delay_ms = 0;
  int64_t run_ms = -1;  // -1: runs until stopped
  int planned_exit_code = 0;
  int64_t stop_delay_ms = 0;
  // Fixed at start by failure_rate: fail this long after reaching running (-1: never).
  int64_t fail_after_ms = -1;

  bool prepare_failed = false;
  bool started = false;
  int64_t starting_ns = 0;
  int64_t running_ns = 0;
  bool stopping = false;  // a shutdown is under way; ends at stop_end_ns
  int64_t stop_end_ns = 0;
  bool stop_kills = false;  // the grace period ends first: SIGKILL, exit code 137

  std::vector<LogLine> logs;  // the last kMaxLogLines lines

  // Not persisted: the pending timer and the ops waiting on this task.
  uint64_t timer_token = 0;  // 0: no timer
  Next timer_kind = Next::kNone;
  int64_t timer_when = 0;
  bool has_start_op = false;
  uint64_t start_op = 0;
  std::vector<uint64_t> waiters;
  std::vector<uint64_t> stop_ops;
  std::vector<Follower> followers;
};

// What a task document asks of the simulation.
struct TaskParams {
  std::string image;
  int64_t start_delay_ms = 0;
  int64_t run_ms = -1;
  int exit_code = 0;
  int64_t stop_delay_ms = 0;
  bool fail_prepare = false;
  std::string fail_message;
};

struct LogOptions {
  bool follow = false;
  int64_t tail = -1;
  int64_t since_ns = 0;
  bool timestamps = false;
};

struct Timer {
  int64_t due_mono;
  uint64_t token;
  std::string task_id;
};

struct TimerLater {
  bool operator()(const Timer& a, const Timer& b) const {
    return a.due_mono != b.due_mono ? a.due_mono > b.due_mono : a.token > b.token;
  }
};

enum class OpKind { kStart, kWait, kShutdown, kFollow };

struct PendingOp {
  OpKind kind;
  std::string task_id;
};

// An event host->post could not take yet (its queue was full).
struct HeldEvent {
  int32_t type;
  uint64_t op;
  shoal_status status;
  std::string subject;
  std::string json;
};

// Reads one state file, refusing anything unexpected as corruption.
class StateReader {
 public:
  explicit StateReader(std::string path) : path_(std::move(path)) {}

  [[noreturn]] void corrupt(const std::string& what) const {
    throw Error(SHOAL_EIO, std::string(kName) + ": state file " + path_ + " is corrupt: " + what +
                               " (move the file away to start without the tasks it holds)");
  }

  Poco::Dynamic::Var member(const Poco::JSON::Object& o, const std::string& key,
                            const std::string& where) const {
    if (!o.has(key)) corrupt(where + "has no \"" + key + "\"");
    return o.get(key);
  }

  int64_t integer(const Poco::JSON::Object& o, const std::string& key, int64_t min, int64_t max,
                  const std::string& where) const {
    const Poco::Dynamic::Var v = member(o, key, where);
    if (!v.isInteger() || v.isBoolean()) corrupt(where + "\"" + key + "\" is not an integer");
    int64_t n = 0;
    try {
      n = v.convert<Poco::Int64>();
    } catch (const Poco::Exception&) {
      corrupt(where + "\"" + key + "\" is out of range");
    }
    if (n < min || n > max) corrupt(where + "\"" + key + "\" is out of range");
    return n;
  }

  std::string string(const Poco::JSON::Object& o, const std::string& key,
                     const std::string& where) const {
    const Poco::Dynamic::Var v = member(o, key, where);
    if (!v.isString()) corrupt(where + "\"" + key + "\" is not a string");
    return v.extract<std::string>();
  }

  bool boolean(const Poco::JSON::Object& o, const std::string& key,
               const std::string& where) const {
    const Poco::Dynamic::Var v = member(o, key, where);
    if (!v.isBoolean()) corrupt(where + "\"" + key + "\" is not a boolean");
    return v.convert<bool>();
  }

 private:
  std::string path_;
};

// ---- the runtime ------------------------------------------------------------------------------

class SimRuntime : public shoal::sdk::Instance {
 public:
  SimRuntime(const shoal_host* host, shoal_instance* inst, std::string_view config_json)
      : Instance(host, inst) {
    Poco::JSON::Object::Ptr config = parseConfig(
        kName, config_json, {"start_delay_ms", "failure_rate", "seed", "root", "stop_delay_ms"});
    start_delay_ms_ = delayConfig(*config, "start_delay_ms");
    stop_delay_ms_ = delayConfig(*config, "stop_delay_ms");
    if (config->has("failure_rate")) {
      failure_rate_ = numberValue(*config, "failure_rate");
      if (!(failure_rate_ >= 0.0 && failure_rate_ <= 1.0)) {
        configError(kName, "config key \"failure_rate\" must be between 0 and 1");
      }
    }
    uint64_t seed = 0;
    if (config->has("seed")) {
      seed = static_cast<uint64_t>(integerValue(*config, "seed"));
    } else {
      std::random_device device;
      seed = (static_cast<uint64_t>(device()) << 32) ^ device();
    }
    rng_.seed(seed);
    root_ = rootValue(kName, *config, kDefaultRoot);
    std::ostringstream rate;
    rate << failure_rate_;
    failure_message_ = "simulated failure (failure_rate " + rate.str() + "): exited with code 1";

    {
      std::lock_guard<std::mutex> lock(mu_);
      loadLocked();
    }
    log(SHOAL_LOG_DEBUG, std::string(kName) + ": root=" + root_ +
                             " start_delay_ms=" + std::to_string(start_delay_ms_) +
                             " stop_delay_ms=" + std::to_string(stop_delay_ms_) +
                             " failure_rate=" + rate.str() + " seed=" + std::to_string(seed));
    // Last: nothing after this may throw, or the thread would outlive a failed init.
    timer_ = std::thread([this] { run(); });
  }

  ~SimRuntime() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    if (timer_.joinable()) timer_.join();
    // The timer thread is gone, so nothing posts any more; save what it had not written yet.
    try {
      std::string error;
      if (!flush(&error)) log(SHOAL_LOG_ERROR, std::string(kName) + ": state not saved: " + error);
    } catch (const std::exception& e) {
      log(SHOAL_LOG_ERROR, std::string(kName) + ": state not saved: " + e.what());
    }
  }

  // The simulated runtime still runs on a real node, so it reports that node's real facts.
  shoal_status describe(shoal_buf* out) {
    Poco::JSON::Object doc(Poco::JSON_PRESERVE_KEY_ORDER);
    doc.set("schema", std::string("shoal.node-runtime/v1"));
    doc.set("runtime", std::string("sim"));
    addNodeFacts(kName, doc);
    return reply(out, toJson(doc));
  }

  shoal_status prepare(uint64_t op, shoal_str task_id, shoal_str task_json) {
    const std::string id = taskId(task_id);
    const TaskParams params = parseTask(id, view(task_json));
    ensureRoot();
    std::lock_guard<std::mutex> lock(mu_);
    if (Task* existing = findLocked(id)) {
      // Idempotent: the same answer as the first prepare gave.
      completeLocked(op, existing->prepare_failed ? SHOAL_EIO : SHOAL_OK, statusDoc(*existing));
      return SHOAL_EAGAIN;
    }
    auto owned = std::make_unique<Task>();
    Task& t = *owned;
    t.id = id;
    t.shard = shardOf(id);
    t.pid = next_pid_++;
    t.image = params.image;
    t.start_delay_ms = params.start_delay_ms;
    t.run_ms = params.run_ms;
    t.planned_exit_code = params.exit_code;
    t.stop_delay_ms = params.stop_delay_ms;
    shards_[t.shard].tasks.emplace(id, std::move(owned));
    const int64_t now = wallNow();
    transitionLocked(t, State::kPreparing, now, "",
                     t.image.empty() ? "sim: preparing" : "sim: preparing image " + t.image);
    if (params.fail_prepare) {
      t.prepare_failed = true;
      transitionLocked(t, State::kFailed, now, params.fail_message,
                       "sim: prepare failed: " + params.fail_message);
      completeLocked(op, SHOAL_EIO, statusDoc(t));
    } else {
      transitionLocked(t, State::kReady, now, "", "sim: prepared");
      completeLocked(op, SHOAL_OK, statusDoc(t));
    }
    return SHOAL_EAGAIN;
  }

  shoal_status start(uint64_t op, shoal_str task_id) {
    const std::string id(view(task_id));
    std::lock_guard<std::mutex> lock(mu_);
    Task* t = findLocked(id);
    if (t == nullptr) {
      return fail(SHOAL_EINVAL, std::string(kName) + ": task " + quoted(id) +
                                    " is not prepared (unknown task; call prepare first)");
    }
    if (t->state != State::kReady) {
      if (t->started) {
        return fail(SHOAL_EINVAL, std::string(kName) + ": task " + quoted(id) +
                                      " is already started (state " + stateName(t->state) + ")");
      }
      return fail(SHOAL_EINVAL, std::string(kName) + ": task " + quoted(id) +
                                    " is not prepared (state " + stateName(t->state) +
                                    (t->message.empty() ? "" : ": " + t->message) + ")");
    }
    checkOpFreeLocked(op);
    t->started = true;
    if (failure_rate_ > 0.0 &&
        std::uniform_real_distribution<double>(0.0, 1.0)(rng_) < failure_rate_) {
      t->fail_after_ms = std::uniform_int_distribution<int64_t>(0, t->start_delay_ms + 100)(rng_);
    }
    const int64_t now = wallNow();
    t->starting_ns = now;
    transitionLocked(*t, State::kStarting, now, "", "sim: starting");
    t->has_start_op = true;
    t->start_op = op;
    pending_[op] = PendingOp{OpKind::kStart, id};
    advanceLocked(*t, now);  // with no start delay it is running (and its op done) right here
    return SHOAL_EAGAIN;
  }

  shoal_status wait(uint64_t op, shoal_str task_id) {
    std::lock_guard<std::mutex> lock(mu_);
    Task& t = knownLocked(view(task_id));
    checkOpFreeLocked(op);
    if (hasExited(t.state)) {
      completeLocked(op, SHOAL_OK, statusDoc(t));
    } else {
      t.waiters.push_back(op);
      pending_[op] = PendingOp{OpKind::kWait, t.id};
    }
    return SHOAL_EAGAIN;
  }

  shoal_status shutdown(uint64_t op, shoal_str task_id, int64_t grace_ns) {
    std::lock_guard<std::mutex> lock(mu_);
    Task& t = knownLocked(view(task_id));
    checkOpFreeLocked(op);
    const int64_t now = wallNow();
    switch (t.state) {
      case State::kPreparing:
      case State::kReady:
        exitLocked(t, State::kShutdown, 0, "shut down before it started", now, "");
        break;
      case State::kStarting:
        // No process yet to receive the stop signal: the start is abandoned at once.
        exitLocked(t, State::kShutdown, 0, "shut down before it was running", now, "");
        break;
      case State::kRunning: {
        const int64_t delay_ns = t.stop_delay_ms * kNsPerMs;
        const bool kills = grace_ns >= 0 && delay_ns > grace_ns;  // negative grace: no limit
        const int64_t end = now + (kills ? grace_ns : delay_ns);
        if (!t.stopping || end < t.stop_end_ns) {
          if (!t.stopping) appendLogLocked(t, now, "sim: received SIGTERM");
          t.stopping = true;
          t.stop_end_ns = end;
          t.stop_kills = kills;
          markDirtyLocked(t);
        }
        t.stop_ops.push_back(op);
        pending_[op] = PendingOp{OpKind::kShutdown, t.id};
        advanceLocked(t, now);
        return SHOAL_EAGAIN;
      }
      case State::kComplete:
      case State::kFailed:
      case State::kShutdown:
        break;
    }
    completeLocked(op, SHOAL_OK, statusDoc(t));
    return SHOAL_EAGAIN;
  }

  shoal_status terminate(uint64_t op, shoal_str task_id) {
    std::lock_guard<std::mutex> lock(mu_);
    Task& t = knownLocked(view(task_id));
    checkOpFreeLocked(op);
    const int64_t now = wallNow();
    if (t.state == State::kPreparing || t.state == State::kReady) {
      exitLocked(t, State::kShutdown, kKilledExitCode, "terminated before it started", now, "");
    } else if (t.state == State::kStarting || t.state == State::kRunning) {
      exitLocked(t, State::kShutdown, kKilledExitCode, "terminated (SIGKILL)", now,
                 "sim: killed by SIGKILL");
    }
    completeLocked(op, SHOAL_OK, statusDoc(t));
    return SHOAL_EAGAIN;
  }

  shoal_status remove(uint64_t op, shoal_str task_id) {
    std::lock_guard<std::mutex> lock(mu_);
    Task& t = knownLocked(view(task_id));
    if (t.state == State::kStarting || t.state == State::kRunning) {
      return fail(SHOAL_EBUSY, std::string(kName) + ": task " + quoted(t.id) + " is " +
                                   stateName(t.state) +
                                   "; shut it down or terminate it before removing it");
    }
    const std::string doc = statusDoc(t);
    // Only a task that never started can still have waiters or followers here.
    for (uint64_t w : t.waiters) {
      pending_.erase(w);
      completeLocked(w, SHOAL_ECANCELED, doc);
    }
    finishFollowersLocked(t);
    markDirtyLocked(t);
    shards_[t.shard].tasks.erase(t.id);  // t is gone from here on
    completeLocked(op, SHOAL_OK, doc);
    return SHOAL_EAGAIN;
  }

  shoal_status inspect(shoal_str task_id, shoal_buf* out) {
    std::string doc;
    {
      std::lock_guard<std::mutex> lock(mu_);
      doc = statusDoc(knownLocked(view(task_id)));
    }
    return reply(out, doc);
  }

  shoal_status list(shoal_buf* out) {
    std::string text = "[";
    {
      std::lock_guard<std::mutex> lock(mu_);
      std::vector<const Task*> all;
      for (const Shard& shard : shards_) {
        for (const auto& entry : shard.tasks) all.push_back(entry.second.get());
      }
      std::sort(all.begin(), all.end(), [](const Task* a, const Task* b) { return a->id < b->id; });
      text.reserve(all.size() * 220 + 2);
      for (std::size_t i = 0; i < all.size(); ++i) {
        if (i > 0) text += ',';
        appendStatusDoc(text, *all[i]);
      }
    }
    text += ']';
    return reply(out, text);
  }

  shoal_status logs(uint64_t op, shoal_str task_id, shoal_str options_json) {
    const LogOptions options = parseLogOptions(view(options_json));
    std::lock_guard<std::mutex> lock(mu_);
    Task& t = knownLocked(view(task_id));
    const bool ends = !options.follow || hasExited(t.state);
    if (!ends) checkOpFreeLocked(op);
    auto first = std::lower_bound(t.logs.begin(), t.logs.end(), options.since_ns,
                                  [](const LogLine& l, int64_t since) { return l.ts < since; });
    if (options.tail >= 0 && t.logs.end() - first > options.tail) {
      first = t.logs.end() - options.tail;
    }
    emitLocked(SHOAL_EVENT_LOG_CHUNK, op, SHOAL_OK, t.id,
               chunkDoc(t.id, t.logs.data() + (first - t.logs.begin()),
                        static_cast<std::size_t>(t.logs.end() - first), options.timestamps, ends));
    if (ends) {
      completeLocked(op, SHOAL_OK, "");
    } else {
      t.followers.push_back(Follower{op, options.timestamps});
      pending_[op] = PendingOp{OpKind::kFollow, t.id};
    }
    return SHOAL_EAGAIN;
  }

  shoal_status cancel(uint64_t op) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = pending_.find(op);
    if (it == pending_.end()) {
      return fail(SHOAL_ENOENT, std::string(kName) + ": no pending op " + std::to_string(op) +
                                    " (it has finished, or was never started)");
    }
    Task* t = findLocked(it->second.task_id);
    switch (it->second.kind) {
      case OpKind::kStart:
      case OpKind::kShutdown:
        return fail(SHOAL_EINVAL, std::string(kName) + ": op " + std::to_string(op) + " is a " +
                                      (it->second.kind == OpKind::kStart ? "start" : "shutdown") +
                                      " of task " + quoted(it->second.task_id) +
                                      ", which cannot be cancelled (terminate the task instead)");
      case OpKind::kWait:
        if (t != nullptr)
          t->waiters.erase(std::remove(t->waiters.begin(), t->waiters.end(), op), t->waiters.end());
        break;
      case OpKind::kFollow:
        if (t != nullptr) {
          t->followers.erase(std::remove_if(t->followers.begin(), t->followers.end(),
                                            [op](const Follower& f) { return f.op == op; }),
                             t->followers.end());
        }
        break;
    }
    pending_.erase(it);
    completeLocked(op, SHOAL_ECANCELED, "");
    return SHOAL_OK;
  }

 private:
  struct Shard {
    std::unordered_map<std::string, std::unique_ptr<Task>> tasks;
  };

  int64_t wallNow() const { return host()->now_ns(); }
  int64_t monoNow() const { return host()->monotonic_ns(); }

  std::string taskId(shoal_str task_id) const {
    std::string id(view(task_id));
    if (id.empty()) throw Error(SHOAL_EINVAL, std::string(kName) + ": the task id is empty");
    return id;
  }

  // ---- input documents ----

  TaskParams parseTask(const std::string& id, std::string_view text) const {
    auto bad = [&](const std::string& what) {
      return Error(SHOAL_EINVAL, std::string(kName) + ": task " + quoted(id) + ": " + what);
    };
    Poco::Dynamic::Var parsed;
    try {
      Poco::JSON::Parser parser;
      parsed = parser.parse(std::string(text));
    } catch (const Poco::Exception& e) {
      throw bad("the task document is not valid JSON: " + e.displayText());
    }
    if (parsed.type() != typeid(Poco::JSON::Object::Ptr)) {
      throw bad("the task document must be a JSON object");
    }
    const Poco::JSON::Object::Ptr doc = parsed.extract<Poco::JSON::Object::Ptr>();
    if (doc->has("schema")) {
      const Poco::Dynamic::Var& schema = doc->get("schema");
      if (!schema.isString() || schema.extract<std::string>() != "shoal.task/v1") {
        throw bad("the task document's schema must be \"shoal.task/v1\"");
      }
    }
    if (!doc->has("id") || !doc->get("id").isString()) {
      throw bad("the task document has no \"id\" string");
    }
    const std::string doc_id = doc->get("id").extract<std::string>();
    if (doc_id != id) throw bad("the task document's id " + quoted(doc_id) + " differs");
    if (!doc->has("spec") || doc->get("spec").type() != typeid(Poco::JSON::Object::Ptr)) {
      throw bad("the task document has no \"spec\" object");
    }
    const Poco::JSON::Object::Ptr spec = doc->getObject("spec");

    TaskParams p;
    p.start_delay_ms = start_delay_ms_;
    p.stop_delay_ms = stop_delay_ms_;
    if (spec->has("image") && spec->get("image").isString()) {
      p.image = spec->get("image").extract<std::string>();
    }
    if (!spec->has("env") || spec->get("env").isEmpty()) return p;
    if (spec->get("env").type() != typeid(Poco::JSON::Array::Ptr)) {
      throw bad("spec.env must be an array of \"KEY=VALUE\" strings");
    }
    const Poco::JSON::Array::Ptr env = spec->getArray("env");
    for (std::size_t i = 0; i < env->size(); ++i) {
      const Poco::Dynamic::Var& entry = env->get(static_cast<unsigned>(i));
      if (!entry.isString()) throw bad("spec.env must be an array of \"KEY=VALUE\" strings");
      const std::string kv = entry.extract<std::string>();
      const std::size_t eq = kv.find('=');
      const std::string key = kv.substr(0, eq);
      if (key.compare(0, 4, "SIM_") != 0) continue;
      if (eq == std::string::npos) continue;  // "KEY" alone passes the daemon's value: none here
      const std::string value = kv.substr(eq + 1);
      if (key == "SIM_START_DELAY_MS") {
        p.start_delay_ms = envInteger(key, value, kMaxDelayMs, bad);
      } else if (key == "SIM_RUN_MS") {
        p.run_ms = envInteger(key, value, kMaxDelayMs, bad);
      } else if (key == "SIM_EXIT_CODE") {
        p.exit_code = static_cast<int>(envInteger(key, value, 255, bad));
      } else if (key == "SIM_STOP_DELAY_MS") {
        p.stop_delay_ms = envInteger(key, value, kMaxDelayMs, bad);
      } else if (key == "SIM_FAIL_PREPARE") {
        p.fail_prepare = true;
        p.fail_message = value.empty() ? "prepare failed (SIM_FAIL_PREPARE)" : value;
      } else {
        throw bad("unknown simulation variable " + key +
                  " (known: SIM_START_DELAY_MS, SIM_RUN_MS, SIM_EXIT_CODE, SIM_STOP_DELAY_MS, "
                  "SIM_FAIL_PREPARE)");
      }
    }
    return p;
  }

  template <class Bad>
  static int64_t envInteger(const std::string& key, const std::string& value, int64_t max,
                            const Bad& bad) {
    const std::string range = " (want an integer from 0 to " + std::to_string(max) + ")";
    int64_t n = 0;
    const char* end = value.data() + value.size();
    const auto r = std::from_chars(value.data(), end, n);
    if (value.empty() || r.ptr != end ||
        (r.ec != std::errc() && r.ec != std::errc::result_out_of_range)) {
      throw bad(key + "=" + quoted(value) + " is not an integer" + range);
    }
    if (value[0] == '-') throw bad(key + "=" + value + " is negative" + range);
    if (r.ec == std::errc::result_out_of_range || n > max) {
      throw bad(key + "=" + value + " is too large" + range);
    }
    return n;
  }

  static LogOptions parseLogOptions(std::string_view text) {
    LogOptions o;
    if (text.find_first_not_of(" \t\r\n") == std::string_view::npos) return o;
    auto bad = [](const std::string& what) {
      return Error(SHOAL_EINVAL, std::string(kName) + ": logs options: " + what);
    };
    Poco::Dynamic::Var parsed;
    try {
      Poco::JSON::Parser parser;
      parsed = parser.parse(std::string(text));
    } catch (const Poco::Exception& e) {
      throw bad("not valid JSON: " + e.displayText());
    }
    if (parsed.type() != typeid(Poco::JSON::Object::Ptr)) throw bad("must be a JSON object");
    const Poco::JSON::Object::Ptr obj = parsed.extract<Poco::JSON::Object::Ptr>();
    for (const auto& member : *obj) {
      const std::string& key = member.first;
      const Poco::Dynamic::Var& v = member.second;
      if (key == "follow" || key == "timestamps") {
        if (!v.isBoolean()) throw bad(quoted(key) + " must be a boolean");
        (key == "follow" ? o.follow : o.timestamps) = v.convert<bool>();
      } else if (key == "tail" || key == "since_ns") {
        if (!v.isInteger() || v.isBoolean()) throw bad(quoted(key) + " must be an integer");
        int64_t n = 0;
        try {
          n = v.convert<Poco::Int64>();
        } catch (const Poco::Exception&) {
          throw bad(quoted(key) + " is out of range");
        }
        if (key == "tail") {
          if (n < -1) throw bad("\"tail\" must be -1 (all) or a number of lines");
          o.tail = n;
        } else {
          o.since_ns = n;
        }
      } else {
        throw bad("unknown option " + quoted(key) + " (known: follow, tail, since_ns, timestamps)");
      }
    }
    return o;
  }

  // ---- output documents ----

  static void appendStatusDoc(std::string& out, const Task& t) {
    out += "{\"schema\":\"shoal.task-status/v1\",\"task_id\":";
    appendJsonString(out, t.id);
    out += ",\"state\":\"";
    out += stateName(t.state);
    out += "\",\"pid\":";
    appendInt(out, t.pid);
    out += ",\"exit_code\":";
    appendInt(out, t.exit_code);
    out += ",\"oom_killed\":false,\"health\":\"\",\"message\":";
    appendJsonString(out, t.message);
    out += ",\"timestamp_ns\":";
    appendInt(out, t.timestamp_ns);
    out += '}';
  }

  static std::string statusDoc(const Task& t) {
    std::string out;
    out.reserve(200 + t.id.size() + t.message.size());
    appendStatusDoc(out, t);
    return out;
  }

  static std::string chunkDoc(const std::string& id, const LogLine* lines, std::size_t count,
                              bool timestamps, bool eof) {
    std::string out = "{\"schema\":\"shoal.log-chunk/v1\",\"task_id\":";
    appendJsonString(out, id);
    out += ",\"records\":[";
    for (std::size_t i = 0; i < count; ++i) {
      if (i > 0) out += ',';
      out += "{\"stream\":\"stdout\",\"timestamp_ns\":";
      appendInt(out, lines[i].ts);
      out += ",\"line\":";
      appendJsonString(out,
                       timestamps ? rfc3339(lines[i].ts) + " " + lines[i].line : lines[i].line);
      out += '}';
    }
    out += "],\"eof\":";
    out += eof ? "true" : "false";
    out += '}';
    return out;
  }

  // ---- task state (all ...Locked functions need mu_) ----

  Task* findLocked(const std::string& id) {
    auto& tasks = shards_[shardOf(id)].tasks;
    auto it = tasks.find(id);
    return it == tasks.end() ? nullptr : it->second.get();
  }

  // The task, brought up to date; SHOAL_ENOENT (thrown) when there is none.
  Task& knownLocked(std::string_view id_view) {
    const std::string id(id_view);
    Task* t = findLocked(id);
    if (t == nullptr) {
      throw Error(SHOAL_ENOENT,
                  std::string(kName) + ": no task " + quoted(id) + " on this node (unknown task)");
    }
    catchUpLocked(*t);
    return *t;
  }

  // If the task's armed transition is already due but the timer thread has not got to it yet,
  // make it happen now, so an op never acts on (or logs after) a moment that has passed.
  void catchUpLocked(Task& t) {
    if (t.timer_token == 0) return;
    const int64_t now = wallNow();
    if (t.timer_when > now) return;
    t.timer_token = 0;  // its heap entry is stale from here on
    applyLocked(t, t.timer_kind, t.timer_when);
    advanceLocked(t, now);
  }

  void checkOpFreeLocked(uint64_t op) const {
    if (pending_.count(op) != 0) {
      throw Error(SHOAL_EEXIST, std::string(kName) + ": op " + std::to_string(op) +
                                    " is already pending (op ids must be unique)");
    }
  }

  void markDirtyLocked(const Task& t) { dirty_ |= uint64_t{1} << t.shard; }

  void emitLocked(int32_t type, uint64_t op, shoal_status status, std::string_view subject,
                  std::string json) {
    if (host_closed_) return;
    if (outbox_.empty()) {
      const shoal_status r = post(type, op, status, subject, json);
      if (r == SHOAL_OK) return;
      if (r == SHOAL_ECANCELED) {
        host_closed_ = true;
        return;
      }
      if (r != SHOAL_ENOMEM) {
        log(SHOAL_LOG_ERROR,
            std::string(kName) + ": the host refused an event (status " + std::to_string(r) + ")");
        return;
      }
      if (!warned_full_) {
        warned_full_ = true;
        log(SHOAL_LOG_WARN,
            std::string(kName) + ": the host's event queue is full; holding events back in order");
      }
      if (sleeping_until_ > monoNow() + kOutboxRetryNs) cv_.notify_one();
    }
    outbox_.push_back(HeldEvent{type, op, status, std::string(subject), std::move(json)});
  }

  void drainOutboxLocked() {
    while (!outbox_.empty() && !host_closed_) {
      const HeldEvent& ev = outbox_.front();
      const shoal_status r = post(ev.type, ev.op, ev.status, ev.subject, ev.json);
      if (r == SHOAL_ENOMEM) return;  // still full: try again shortly
      if (r == SHOAL_ECANCELED) host_closed_ = true;
      outbox_.pop_front();
    }
    if (host_closed_) outbox_.clear();
  }

  void completeLocked(uint64_t op, shoal_status status, std::string json) {
    emitLocked(SHOAL_EVENT_OP_DONE, op, status, {}, std::move(json));
  }

  void appendLogLocked(Task& t, int64_t ts, std::string line) {
    // Kept in time order (logs' since_ns relies on it), even if the host's clock steps back.
    if (!t.logs.empty()) ts = std::max(ts, t.logs.back().ts);
    t.logs.push_back(LogLine{ts, std::move(line)});
    if (t.logs.size() > kMaxLogLines) {
      t.logs.erase(t.logs.begin(), t.logs.begin() + (t.logs.size() - kMaxLogLines));
    }
    for (const Follower& f : t.followers) {
      emitLocked(SHOAL_EVENT_LOG_CHUNK, f.op, SHOAL_OK, t.id,
                 chunkDoc(t.id, &t.logs.back(), 1, f.timestamps, false));
    }
  }

  void transitionLocked(Task& t, State state, int64_t ts, std::string message,
                        std::string log_line) {
    t.state = state;
    t.timestamp_ns = ts;
    t.message = std::move(message);
    if (!log_line.empty()) appendLogLocked(t, ts, std::move(log_line));
    emitLocked(SHOAL_EVENT_TASK_STATUS, 0, SHOAL_OK, t.id, statusDoc(t));
    markDirtyLocked(t);
  }

  void finishFollowersLocked(Task& t) {
    for (const Follower& f : t.followers) {
      pending_.erase(f.op);
      emitLocked(SHOAL_EVENT_LOG_CHUNK, f.op, SHOAL_OK, t.id,
                 chunkDoc(t.id, nullptr, 0, false, true));
      completeLocked(f.op, SHOAL_OK, "");
    }
    t.followers.clear();
  }

  // The task's process is gone: settle every op that waited for that.
  void exitLocked(Task& t, State state, int exit_code, std::string message, int64_t ts,
                  std::string extra_line) {
    t.exit_code = exit_code;
    t.stopping = false;
    t.timer_token = 0;
    if (!extra_line.empty()) appendLogLocked(t, ts, std::move(extra_line));
    // A task that never started has no process to exit: its log says why it ended instead.
    std::string line =
        t.started ? "sim: exited with code " + std::to_string(exit_code) : "sim: " + message;
    transitionLocked(t, state, ts, std::move(message), std::move(line));
    const std::string doc = statusDoc(t);
    if (t.has_start_op) {
      t.has_start_op = false;
      pending_.erase(t.start_op);
      completeLocked(t.start_op, SHOAL_ECANCELED, doc);
    }
    for (uint64_t w : t.waiters) {
      pending_.erase(w);
      completeLocked(w, SHOAL_OK, doc);
    }
    t.waiters.clear();
    for (uint64_t s : t.stop_ops) {
      pending_.erase(s);
      completeLocked(s, SHOAL_OK, doc);
    }
    t.stop_ops.clear();
    finishFollowersLocked(t);
  }

  // When the task's next transition is due (wall clock), and which it is.
  static std::pair<int64_t, Next> nextEventOf(const Task& t) {
    if (t.state == State::kStarting) {
      return {t.starting_ns + t.start_delay_ms * kNsPerMs, Next::kRunning};
    }
    if (t.state != State::kRunning) return {kNever, Next::kNone};
    std::pair<int64_t, Next> best{kNever, Next::kNone};
    auto consider = [&](int64_t when, Next kind) {
      if (when < best.first) best = {when, kind};
    };
    if (t.run_ms >= 0) consider(t.running_ns + t.run_ms * kNsPerMs, Next::kExit);
    if (t.fail_after_ms >= 0) consider(t.running_ns + t.fail_after_ms * kNsPerMs, Next::kFail);
    if (t.stopping) consider(t.stop_end_ns, Next::kStop);
    return best;
  }

  // Make `kind` happen to the task, stamped `ts` (the moment it was due).
  void applyLocked(Task& t, Next kind, int64_t ts) {
    switch (kind) {
      case Next::kNone:
        return;
      case Next::kRunning:
        t.running_ns = ts;
        transitionLocked(t, State::kRunning, ts, "", "sim: started");
        if (t.has_start_op) {
          t.has_start_op = false;
          pending_.erase(t.start_op);
          completeLocked(t.start_op, SHOAL_OK, statusDoc(t));
        }
        return;
      case Next::kExit:
        exitLocked(
            t, t.planned_exit_code == 0 ? State::kComplete : State::kFailed, t.planned_exit_code,
            t.planned_exit_code == 0 ? "finished"
                                     : "exited with code " + std::to_string(t.planned_exit_code),
            ts, "");
        return;
      case Next::kFail:
        exitLocked(t, State::kFailed, kFailureExitCode, failure_message_, ts,
                   "sim: simulated failure");
        return;
      case Next::kStop:
        if (t.stop_kills) {
          exitLocked(t, State::kShutdown, kKilledExitCode,
                     "killed by SIGKILL after the grace period", ts,
                     "sim: killed by SIGKILL after the grace period");
        } else {
          exitLocked(t, State::kShutdown, 0, "shut down", ts, "");
        }
        return;
    }
  }

  // Apply every transition of the task due by `now` (stamped when each was due), then arm a
  // timer for the next one. At load this replays what happened while nothing was loaded.
  void advanceLocked(Task& t, int64_t now) {
    for (;;) {
      const auto [when, kind] = nextEventOf(t);
      if (kind == Next::kNone) {
        t.timer_token = 0;
        return;
      }
      if (when > now) {
        scheduleLocked(t, when, kind, now);
        return;
      }
      applyLocked(t, kind, when);
    }
  }

  void scheduleLocked(Task& t, int64_t when, Next kind, int64_t now) {
    t.timer_token = ++next_token_;
    t.timer_kind = kind;
    t.timer_when = when;
    const int64_t due = monoNow() + (when - now);
    timers_.push(Timer{due, t.timer_token, t.id});
    if (due < sleeping_until_) cv_.notify_one();
  }

  void fireLocked(const Timer& timer) {
    Task* t = findLocked(timer.task_id);
    if (t == nullptr || t->timer_token != timer.token) return;  // superseded or removed
    t->timer_token = 0;
    const int64_t when = t->timer_when;
    applyLocked(*t, t->timer_kind, when);
    advanceLocked(*t, std::max(wallNow(), when));
  }

  // ---- persistence ----

  std::string shardPath(std::size_t shard) const {
    char name[32];
    std::snprintf(name, sizeof name, "/tasks-%02zx.json", shard);
    return root_ + name;
  }

  // Create root (mode 0700, parents 0755) the first time a task needs it, so loading the
  // plugin with the default root needs no privileges until it is used.
  void ensureRoot() {
    if (root_ready_) return;
    std::string path;
    std::size_t pos = 0;
    while (pos != std::string::npos) {
      pos = root_.find('/', pos + 1);
      path = root_.substr(0, pos);
      const bool leaf = pos == std::string::npos || pos + 1 == root_.size();
      if (::mkdir(path.c_str(), leaf ? 0700 : 0755) != 0 && errno != EEXIST) {
        throw Error(SHOAL_EIO, std::string(kName) + ": cannot create state directory " + path +
                                   ": " + errnoText(errno));
      }
      if (leaf) break;
    }
    struct stat st {};
    if (::stat(root_.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      throw Error(SHOAL_EIO,
                  std::string(kName) + ": state directory " + root_ + " is not a directory");
    }
    root_ready_ = true;
  }

  void appendTaskRecord(std::string& out, const Task& t) const {
    out += "{\"id\":";
    appendJsonString(out, t.id);
    auto integer = [&out](const char* key, int64_t v) {
      out += ",\"";
      out += key;
      out += "\":";
      appendInt(out, v);
    };
    auto boolean = [&out](const char* key, bool v) {
      out += ",\"";
      out += key;
      out += v ? "\":true" : "\":false";
    };
    integer("pid", t.pid);
    out += ",\"state\":\"";
    out += stateName(t.state);
    out += '"';
    integer("exit_code", t.exit_code);
    out += ",\"message\":";
    appendJsonString(out, t.message);
    integer("timestamp_ns", t.timestamp_ns);
    out += ",\"image\":";
    appendJsonString(out, t.image);
    integer("start_delay_ms", t.start_delay_ms);
    integer("run_ms", t.run_ms);
    integer("planned_exit_code", t.planned_exit_code);
    integer("stop_delay_ms", t.stop_delay_ms);
    integer("fail_after_ms", t.fail_after_ms);
    boolean("prepare_failed", t.prepare_failed);
    boolean("started", t.started);
    integer("starting_ns", t.starting_ns);
    integer("running_ns", t.running_ns);
    boolean("stopping", t.stopping);
    integer("stop_end_ns", t.stop_end_ns);
    boolean("stop_kills", t.stop_kills);
    out += ",\"logs\":[";
    for (std::size_t i = 0; i < t.logs.size(); ++i) {
      if (i > 0) out += ',';
      out += '[';
      appendInt(out, t.logs[i].ts);
      out += ',';
      appendJsonString(out, t.logs[i].line);
      out += ']';
    }
    out += "]}";
  }

  std::string shardTextLocked(std::size_t shard) const {
    std::string out = "{\"schema\":\"";
    out += kStateSchema;
    out += "\",\"tasks\":[";
    bool first = true;
    for (const auto& entry : shards_[shard].tasks) {
      if (!first) out += ",\n";
      first = false;
      appendTaskRecord(out, *entry.second);
    }
    out += "]}\n";
    return out;
  }

  // Write every shard that changed. Called without mu_ (it takes it per shard, so ops are not
  // held up by the disk): by the timer thread, or by the destructor once that thread is gone.
  bool flush(std::string* error) {
    uint64_t mask = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      mask = dirty_;
      dirty_ = 0;
    }
    if (mask == 0) return true;
    bool ok = true;
    for (std::size_t i = 0; i < kShardCount; ++i) {
      if ((mask & (uint64_t{1} << i)) == 0) continue;
      std::string text;
      bool empty = false;
      {
        std::lock_guard<std::mutex> lock(mu_);
        empty = shards_[i].tasks.empty();
        if (!empty) text = shardTextLocked(i);
      }
      const std::string path = shardPath(i);
      std::string why;
      bool done = true;
      if (empty) {
        if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
          why = "cannot remove " + path + ": " + errnoText(errno);
          done = false;
        }
      } else {
        done = writeAtomically(path, text, &why);
      }
      if (!done) {
        std::lock_guard<std::mutex> lock(mu_);
        dirty_ |= uint64_t{1} << i;  // try again later
        if (ok) *error = why;
        ok = false;
      }
    }
    std::string why;
    if (!fsyncDirectory(root_, &why) && ok) {
      *error = why;
      ok = false;
    }
    return ok;
  }

  // Read every shard file under root. A file that cannot be read or parsed fails init: its
  // tasks are "containers" the agent expects to find, so dropping them silently would lie.
  void loadLocked() {
    struct stat st {};
    if (::stat(root_.c_str(), &st) != 0) {
      if (errno == ENOENT) return;  // nothing ran here yet; created on the first prepare
      throw Error(SHOAL_EIO, std::string(kName) + ": cannot read state directory " + root_ + ": " +
                                 errnoText(errno));
    }
    if (!S_ISDIR(st.st_mode)) {
      throw Error(SHOAL_EIO,
                  std::string(kName) + ": state directory " + root_ + " is not a directory");
    }
    root_ready_ = true;
    std::vector<Task*> loaded;
    for (std::size_t i = 0; i < kShardCount; ++i) loadShardLocked(shardPath(i), &loaded);
    const int64_t now = wallNow();
    for (Task* t : loaded) advanceLocked(*t, now);
    if (!loaded.empty()) {
      log(SHOAL_LOG_INFO, std::string(kName) + ": loaded " + std::to_string(loaded.size()) +
                              " task(s) from " + root_);
    }
  }

  void loadShardLocked(const std::string& path, std::vector<Task*>* loaded) {
    std::string text;
    bool missing = false;
    std::string error;
    if (!readWholeFile(path, &text, &missing, &error)) {
      if (missing) return;
      throw Error(SHOAL_EIO, std::string(kName) + ": " + error);
    }
    const StateReader r(path);
    Poco::Dynamic::Var parsed;
    try {
      Poco::JSON::Parser parser;
      parsed = parser.parse(text);
    } catch (const Poco::Exception& e) {
      r.corrupt("not valid JSON (" + e.displayText() + ")");
    }
    if (parsed.type() != typeid(Poco::JSON::Object::Ptr)) r.corrupt("not a JSON object");
    const Poco::JSON::Object::Ptr doc = parsed.extract<Poco::JSON::Object::Ptr>();
    if (r.string(*doc, "schema", "the file ") != kStateSchema) {
      r.corrupt(std::string("its schema is not \"") + kStateSchema + "\"");
    }
    if (!doc->has("tasks") || doc->get("tasks").type() != typeid(Poco::JSON::Array::Ptr)) {
      r.corrupt("it has no \"tasks\" array");
    }
    const Poco::JSON::Array::Ptr tasks = doc->getArray("tasks");
    for (std::size_t i = 0; i < tasks->size(); ++i) {
      const std::string where = "task #" + std::to_string(i) + " ";
      if (tasks->get(static_cast<unsigned>(i)).type() != typeid(Poco::JSON::Object::Ptr)) {
        r.corrupt(where + "is not an object");
      }
      const Poco::JSON::Object::Ptr o = tasks->getObject(static_cast<unsigned>(i));
      auto owned = std::make_unique<Task>();
      Task& t = *owned;
      t.id = r.string(*o, "id", where);
      if (t.id.empty()) r.corrupt(where + "has an empty id");
      t.shard = shardOf(t.id);
      t.pid = r.integer(*o, "pid", 1, INT32_MAX, where);
      if (!parseState(r.string(*o, "state", where), &t.state)) {
        r.corrupt(where + "has an unknown state");
      }
      if (t.state == State::kPreparing) t.state = State::kReady;  // prepare completes at once
      t.exit_code = static_cast<int>(r.integer(*o, "exit_code", 0, 255, where));
      t.message = r.string(*o, "message", where);
      t.timestamp_ns = r.integer(*o, "timestamp_ns", INT64_MIN, INT64_MAX, where);
      t.image = r.string(*o, "image", where);
      t.start_delay_ms = r.integer(*o, "start_delay_ms", 0, kMaxDelayMs, where);
      t.run_ms = r.integer(*o, "run_ms", -1, kMaxDelayMs, where);
      t.planned_exit_code = static_cast<int>(r.integer(*o, "planned_exit_code", 0, 255, where));
      t.stop_delay_ms = r.integer(*o, "stop_delay_ms", 0, kMaxDelayMs, where);
      t.fail_after_ms = r.integer(*o, "fail_after_ms", -1, kMaxDelayMs + 100, where);
      t.prepare_failed = r.boolean(*o, "prepare_failed", where);
      t.started = r.boolean(*o, "started", where);
      // Stamps stay within a century of the epoch, so adding a day of delay cannot overflow.
      constexpr int64_t kStampLimit = int64_t{1} << 62;
      t.starting_ns = r.integer(*o, "starting_ns", -kStampLimit, kStampLimit, where);
      t.running_ns = r.integer(*o, "running_ns", -kStampLimit, kStampLimit, where);
      t.stopping = r.boolean(*o, "stopping", where);
      t.stop_end_ns = r.integer(*o, "stop_end_ns", -kStampLimit, kStampLimit, where);
      t.stop_kills = r.boolean(*o, "stop_kills", where);
      const Poco::Dynamic::Var logs = r.member(*o, "logs", where);
      if (logs.type() != typeid(Poco::JSON::Array::Ptr))
        r.corrupt(where + "\"logs\" is not an array");
      const Poco::JSON::Array::Ptr lines = logs.extract<Poco::JSON::Array::Ptr>();
      for (std::size_t j = 0; j < lines->size(); ++j) {
        const Poco::Dynamic::Var& entry = lines->get(static_cast<unsigned>(j));
        if (entry.type() != typeid(Poco::JSON::Array::Ptr)) {
          r.corrupt(where + "has a log line that is not [timestamp_ns, line]");
        }
        const Poco::JSON::Array::Ptr pair = entry.extract<Poco::JSON::Array::Ptr>();
        if (pair->size() != 2 || !pair->get(0).isInteger() || pair->get(0).isBoolean() ||
            !pair->get(1).isString()) {
          r.corrupt(where + "has a log line that is not [timestamp_ns, line]");
        }
        t.logs.push_back(
            LogLine{pair->get(0).convert<Poco::Int64>(), pair->get(1).extract<std::string>()});
      }
      if (t.logs.size() > kMaxLogLines) {
        t.logs.erase(t.logs.begin(), t.logs.begin() + (t.logs.size() - kMaxLogLines));
      }
      if (findLocked(t.id) != nullptr) r.corrupt(where + "repeats task " + quoted(t.id));
      next_pid_ = std::max(next_pid_, t.pid + 1);
      Task* raw = owned.get();
      shards_[t.shard].tasks.emplace(t.id, std::move(owned));
      loaded->push_back(raw);
    }
  }

  // ---- the timer thread ----

  void run() {
    for (;;) {
      try {
        if (!runOnce()) return;
      } catch (const std::exception& e) {
        // Never let an exception end the thread (or the process): log it and carry on.
        log(SHOAL_LOG_ERROR, std::string(kName) + ": timer thread: " + e.what());
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    }
  }

  // One round: fire due timers, re-post held events, write changed shards, sleep. False when
  // the runtime is shutting down.
  bool runOnce() {
    std::unique_lock<std::mutex> lock(mu_);
    if (stopping_) return false;
    const int64_t mono = monoNow();
    std::size_t fired = 0;
    while (!timers_.empty() && timers_.top().due_mono <= mono && fired < kTimerBatch) {
      const Timer timer = timers_.top();
      timers_.pop();
      ++fired;
      fireLocked(timer);
    }
    drainOutboxLocked();
    if (fired == kTimerBatch) return true;  // more are due: let an op in first
    if (dirty_ != 0 && mono >= next_flush_mono_) {
      lock.unlock();
      const int64_t began = monoNow();
      std::string error;
      const bool ok = flush(&error);
      const int64_t took = monoNow() - began;
      if (!ok) log(SHOAL_LOG_WARN, std::string(kName) + ": state not saved (will retry): " + error);
      lock.lock();
      // Under a heavy load a full rewrite can take long: then write less often.
      next_flush_mono_ = monoNow() + (ok ? std::max(kFlushIntervalNs, 2 * took) : kFlushRetryNs);
      return true;
    }
    int64_t wake = mono + kMaxSleepNs;
    if (!timers_.empty()) wake = std::min(wake, timers_.top().due_mono);
    if (dirty_ != 0) wake = std::min(wake, next_flush_mono_);
    if (!outbox_.empty()) wake = std::min(wake, mono + kOutboxRetryNs);
    if (wake > mono) {
      sleeping_until_ = wake;
      cv_.wait_for(lock, std::chrono::nanoseconds(wake - mono));
      sleeping_until_ = kAwake;
    }
    return true;
  }

  // Configuration: set by the constructor, read-only afterwards.
  int64_t start_delay_ms_ = 0;  // how long a simulated task takes to reach "running"
  int64_t stop_delay_ms_ = 0;   // how long a graceful stop takes
  double failure_rate_ = 0.0;   // the probability that a started task fails
  std::string failure_message_;
  std::string root_;

  bool root_ready_ = false;  // op thread only (constructor, prepare)

  std::mutex mu_;
  std::condition_variable cv_;                                         // wakes the timer thread
  std::array<Shard, kShardCount> shards_;                              // guarded by mu_
  std::priority_queue<Timer, std::vector<Timer>, TimerLater> timers_;  // guarded by mu_
  uint64_t next_token_ = 0;                                            // guarded by mu_
  std::unordered_map<uint64_t, PendingOp> pending_;                    // guarded by mu_
  std::deque<HeldEvent> outbox_;                                       // guarded by mu_
  bool host_closed_ = false;         // guarded by mu_: post answered SHOAL_ECANCELED (fini began)
  bool warned_full_ = false;         // guarded by mu_
  uint64_t dirty_ = 0;               // guarded by mu_: bit i set = shard i changed since written
  int64_t next_flush_mono_ = 0;      // guarded by mu_
  int64_t sleeping_until_ = kAwake;  // guarded by mu_: when the sleeping timer thread wakes
  bool stopping_ = false;            // guarded by mu_
  std::mt19937_64 rng_;              // guarded by mu_
  int64_t next_pid_ = kFirstPid;     // guarded by mu_
  std::thread timer_;                // started last by the constructor, joined by the destructor
};

const shoal_runtime_ops kOps = [] {
  using shoal::sdk::op;
  shoal_runtime_ops o{};
  o.struct_size = sizeof o;
  o.describe = op<&SimRuntime::describe>;
  o.prepare = op<&SimRuntime::prepare>;
  o.start = op<&SimRuntime::start>;
  o.wait = op<&SimRuntime::wait>;
  o.shutdown = op<&SimRuntime::shutdown>;
  o.terminate = op<&SimRuntime::terminate>;
  o.remove = op<&SimRuntime::remove>;
  o.inspect = op<&SimRuntime::inspect>;
  o.list = op<&SimRuntime::list>;
  o.logs = op<&SimRuntime::logs>;
  o.cancel = op<&SimRuntime::cancel>;
  return o;
}();

const shoal_plugin_desc kDesc =
    shoal::sdk::describe<SimRuntime>(SHOAL_KIND_RUNTIME, kName, kVersion, &kOps);

}  // namespace

SHOAL_PLUGIN(kDesc)
