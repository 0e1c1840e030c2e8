// runtime-runc: runs a node's tasks as OCI containers through runc (or a runc-compatible
// runtime such as crun), each under its own shoal-shim, with images from registries.
//
// This file is the plugin's glue: the shoal_runtime_ops, the task records and their states,
// the worker threads that do the slow parts (pulls, mounts, runc), health checks and stop
// timers. image/ keeps the images; container/ writes OCI specs and runs the shims. See
// README.md for the design.
#include <shoal/runtime.h>
#include <shoal/plugin.hpp>
#include <shoal_plugins/config.hpp>
#include <shoal_plugins/json.hpp>
#include <shoal_plugins/node_info.hpp>
#include <shoal_plugins/time.hpp>

#include <Poco/Dynamic/Var.h>
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <queue>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "container/oci_spec.h"
#include "container/process.h"
#include "container/runc.h"
#include "container/shim.h"
#include "container/task_spec.h"
#include "image/image_store.h"

#ifndef SHOAL_SHIM_PATH
#define SHOAL_SHIM_PATH "/usr/bin/shoal-shim"
#endif

namespace {

using shoal::plugins::addNodeFacts;
using shoal::plugins::configError;
using shoal::plugins::parseConfig;
using shoal::plugins::toJson;
using shoal::sdk::Error;
using JObject = Poco::JSON::Object;
using JArray = Poco::JSON::Array;

constexpr char kName[] = "runtime-runc";
constexpr char kVersion[] = "0.1.0";
// Threads for prepare, start, remove and image ops: mostly waiting on runc and the kernel.
constexpr int kWorkers = 8;

bool isExecutableFile(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && access(path.c_str(), X_OK) == 0;
}

// Where `program` is found the way execvp would find it, or "" when it is not. Relative PATH
// entries (including the empty one, meaning ".") are skipped: a daemon must not run a binary
// because of the directory it happened to start in.
std::string resolveProgram(const std::string& program) {
  if (program.find('/') != std::string::npos) return isExecutableFile(program) ? program : "";
  const char* env = std::getenv("PATH");
  std::string path = env != nullptr ? env : "/bin:/usr/bin";  // execvp's default
  std::string::size_type begin = 0;
  while (begin <= path.size()) {
    std::string::size_type end = path.find(':', begin);
    if (end == std::string::npos) end = path.size();
    std::string dir = path.substr(begin, end - begin);
    if (!dir.empty() && dir[0] == '/') {
      std::string candidate = dir + (dir.back() == '/' ? "" : "/") + program;
      if (isExecutableFile(candidate)) return candidate;
    }
    begin = end + 1;
  }
  return "";
}

int64_t wallNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

int64_t monoNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void mkdirs(const std::string& path, mode_t mode) {
  if (!shoal::runc::makeDirs(path, mode)) {
    throw Error(SHOAL_EIO,
                std::string(kName) + ": cannot create " + path + ": " + std::strerror(errno));
  }
}

// Removes a directory tree without following symlinks or crossing into mounts below it.
void removeTree(const std::string& path) {
  struct stat st {};
  if (lstat(path.c_str(), &st) != 0) return;
  if (S_ISDIR(st.st_mode)) {
    if (DIR* d = opendir(path.c_str())) {
      std::vector<std::string> names;
      while (dirent* e = readdir(d)) {
        if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) {
          names.emplace_back(e->d_name);
        }
      }
      closedir(d);
      for (const auto& n : names) removeTree(path + "/" + n);
    }
    rmdir(path.c_str());
  } else {
    unlink(path.c_str());
  }
}

void writeFileAtomic(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    throw Error(SHOAL_EIO,
                std::string(kName) + ": cannot write " + tmp + ": " + std::strerror(errno));
  }
  std::size_t off = 0;
  while (off < text.size()) {
    ssize_t n = ::write(fd, text.data() + off, text.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      close(fd);
      throw Error(SHOAL_EIO,
                  std::string(kName) + ": cannot write " + tmp + ": " + std::strerror(err));
    }
    off += static_cast<std::size_t>(n);
  }
  fsync(fd);
  close(fd);
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    throw Error(SHOAL_EIO,
                std::string(kName) + ": cannot rename " + tmp + ": " + std::strerror(errno));
  }
}

// Mounts the overlay of `lower` (top layer first), `upper` and `work` on `target`. The
// directories are named as /proc/thread-self/fd/N of fds opened here, not by their paths: the
// kernel resolves them at the mount, and mountinfo shows the options as written. Every runc reads
// the host's mountinfo several times per container, so the bytes each container's line adds are
// paid by every later start (100 lines of full paths cost each runc about 5 ms here, 549 bytes
// a line against about 250 now); and mount options must fit in a page, which 64-hex layer
// paths outgrow at about 35 layers.
void mountOverlay(const std::vector<std::string>& lower, const std::string& upper,
                  const std::string& work, const std::string& target, const std::string& id) {
  std::vector<int> fds;
  const auto closeAll = [&fds] {
    for (int fd : fds) close(fd);
  };
  const auto fdPath = [&](const std::string& dir) {
    const int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
      const int e = errno;
      closeAll();
      throw Error(SHOAL_EIO, std::string(kName) + ": cannot mount the rootfs of task " + id +
                                 ": cannot open " + dir + ": " + std::strerror(e));
    }
    fds.push_back(fd);
    return "/proc/thread-self/fd/" + std::to_string(fd);
  };
  std::string options = "lowerdir=";
  for (std::size_t i = 0; i < lower.size(); ++i) {
    options += (i == 0 ? "" : ":") + fdPath(lower[i]);
  }
  options += ",upperdir=" + fdPath(upper) + ",workdir=" + fdPath(work);
  const int rc = ::mount("overlay", target.c_str(), "overlay", 0, options.c_str());
  const int e = errno;
  closeAll();
  if (rc != 0) {
    throw Error(SHOAL_EIO, std::string(kName) + ": cannot mount the rootfs of task " + id +
                               " (overlay of " + std::to_string(lower.size()) +
                               " layers): " + std::strerror(e));
  }
}

std::optional<std::string> readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

JObject::Ptr parseObject(const std::string& text) {
  try {
    return Poco::JSON::Parser().parse(text).extract<JObject::Ptr>();
  } catch (const std::exception&) {
    return nullptr;
  }
}

// Whether the OCI bundle's process has a terminal (the task asked for --tty): config.json, as
// prepare wrote it, is what runc will run, so it decides rather than a record of the task.
bool bundleHasTerminal(const std::string& configPath) {
  std::optional<std::string> text = readFile(configPath);
  JObject::Ptr config = text ? parseObject(*text) : nullptr;
  JObject::Ptr process = config ? config->getObject("process") : nullptr;
  if (!process) {
    throw Error(SHOAL_EIO, std::string(kName) + ": " + configPath +
                               " is missing or has no \"process\" object");
  }
  return process->optValue<bool>("terminal", false);
}

std::vector<std::string> stringArray(const JObject::Ptr& o, const std::string& key) {
  std::vector<std::string> out;
  if (!o) return out;
  auto a = o->getArray(key);
  for (std::size_t i = 0; a && i < a->size(); ++i) {
    if (a->get(static_cast<unsigned>(i)).isString()) {
      out.push_back(a->getElement<std::string>(static_cast<unsigned>(i)));
    }
  }
  return out;
}

JArray::Ptr toArray(const std::vector<std::string>& v) {
  JArray::Ptr a = new JArray;
  for (const auto& s : v) a->add(s);
  return a;
}

// Docker's health check (config.Healthcheck / ContainerSpec.Healthcheck), durations in ns.
struct Health {
  std::vector<std::string> test;  // after resolution: the argv to exec; empty = none
  int64_t intervalNs = 30'000'000'000;
  int64_t timeoutNs = 30'000'000'000;
  int64_t startPeriodNs = 0;
  int retries = 3;
};

// The check a task runs: the service's fields over the image's, Docker's defaults for what
// neither sets; no check for a test of ["NONE"] (--no-healthcheck) or none at all.
std::optional<Health> resolveHealth(const std::string& taskJson, const std::string& imageJson) {
  JObject::Ptr task = taskJson.empty() ? nullptr : parseObject(taskJson);
  JObject::Ptr image = imageJson.empty() ? nullptr : parseObject(imageJson);
  std::vector<std::string> test = stringArray(task, "Test");
  if (test.empty()) test = stringArray(image, "Test");
  if (test.empty() || test[0] == "NONE") return std::nullopt;
  Health h;
  if (test[0] == "CMD") {
    h.test.assign(test.begin() + 1, test.end());
  } else if (test[0] == "CMD-SHELL" && test.size() >= 2) {
    h.test = {"/bin/sh", "-c", test[1]};
  } else {
    return std::nullopt;
  }
  if (h.test.empty()) return std::nullopt;
  auto num = [&](const char* key, int64_t& into) {
    for (const auto& o : {task, image}) {
      if (o && o->has(key)) {
        try {
          const int64_t v = o->getValue<int64_t>(key);
          if (v > 0) {
            into = v;
            return;
          }
        } catch (const std::exception&) {
        }
      }
    }
  };
  num("Interval", h.intervalNs);
  num("Timeout", h.timeoutNs);
  num("StartPeriod", h.startPeriodNs);
  int64_t retries = h.retries;
  num("Retries", retries);
  h.retries = static_cast<int>(std::min<int64_t>(retries, 1000));
  return h;
}

// A few threads running queued jobs: signals and health checks each get their own, so that
// slow work (pulls, runc run) never delays a stop or a probe. THREAD: post from any thread.
class JobPool {
 public:
  using Log = std::function<void(const std::string&)>;
  JobPool(int threads, Log log) : log_(std::move(log)) {
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { loop(); });
  }
  ~JobPool() { stop(); }
  JobPool(const JobPool&) = delete;
  JobPool& operator=(const JobPool&) = delete;

  void post(std::function<void()> job) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopped_) return;
      jobs_.push_back(std::move(job));
    }
    cv_.notify_one();
  }
  // Drops what is still queued and joins the threads (a running job finishes first).
  void stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopped_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
  }

 private:
  void loop() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return stopped_ || !jobs_.empty(); });
      if (stopped_) return;
      auto job = std::move(jobs_.front());
      jobs_.pop_front();
      lock.unlock();
      try {
        job();
      } catch (const std::exception& e) {
        log_(e.what());
      }
      lock.lock();
    }
  }

  Log log_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;  // guarded by mu_
  bool stopped_ = false;                    // guarded by mu_
  std::vector<std::thread> threads_;
};

// A status document's "state" values (runtime.h).
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
  return "failed";
}

std::optional<State> stateFromName(const std::string& s) {
  for (State v : {State::kPreparing, State::kReady, State::kStarting, State::kRunning,
                  State::kComplete, State::kFailed, State::kShutdown}) {
    if (s == stateName(v)) return v;
  }
  return std::nullopt;
}

bool exited(State s) {
  return s == State::kComplete || s == State::kFailed || s == State::kShutdown;
}

// One task as this runtime keeps it. Guarded by Runtime::mu_.
struct Task {
  std::string id;
  State state = State::kPreparing;
  std::string imageRef;  // as the task asked for it
  std::string imageId;   // the image it holds (acquired), "" before prepare has it
  int stopSignal = SIGTERM;
  int64_t graceNs = 10'000'000'000;
  std::optional<Health> health;
  std::string healthState;  // "", "starting", "healthy", "unhealthy"
  int healthFailures = 0;
  int64_t startedMono = 0;
  int pid = 0;
  int exitCode = 0;
  bool oomKilled = false;
  std::string message;
  int64_t stampNs = 0;
  bool stopRequested = false;  // a shutdown or terminate asked for the exit
  bool mounted = false;
  bool busy = false;     // a worker holds it (prepare, start, remove)
  uint64_t startOp = 0;  // a start waiting for health
  std::vector<uint64_t> waits;
  std::vector<uint64_t> stops;  // shutdown/terminate ops waiting for the exit
  uint64_t killToken = 0;       // the grace timer that is current
};

class RuncRuntime : public shoal::sdk::Instance {
 public:
  RuncRuntime(const shoal_host* host, shoal_instance* inst, std::string_view config_json)
      : Instance(host, inst) {
    Poco::JSON::Object::Ptr config =
        parseConfig(kName, config_json,
                    {"runtime", "root", "runtime_root", "shim", "init", "cgroup_parent",
                     "insecure_registries", "registry_credentials", "registry_certs_dir",
                     "concurrent_downloads", "log_max_bytes", "log_max_files", "seccomp"});
    runtime_ = stringKey(*config, "runtime", runtime_);
    if (runtime_.empty() || (runtime_.find('/') != std::string::npos && runtime_[0] != '/')) {
      configError(kName, "config key \"runtime\" must be a program name or an absolute path");
    }
    root_ = shoal::plugins::rootValue(kName, *config, root_);
    runtimeRoot_ = absoluteKey(*config, "runtime_root", runtimeRoot_);
    shim_ = absoluteKey(*config, "shim", shim_);
    init_ = absoluteKey(*config, "init", init_);
    const std::string seccomp = stringKey(*config, "seccomp", "default");
    if (seccomp != "default" && seccomp != "unconfined") {
      configError(kName, "config key \"seccomp\" must be \"default\" or \"unconfined\"");
    }
    seccomp_ = seccomp == "default";
    swapLimit_ = shoal::runc::hostLimitsSwap();
    cgroupParent_ = stringKey(*config, "cgroup_parent", cgroupParent_);
    if (cgroupParent_.empty() || cgroupParent_.find("..") != std::string::npos ||
        cgroupParent_[0] == '/') {
      configError(kName,
                  "config key \"cgroup_parent\" must be a relative cgroup path such as "
                  "\"shoal\"");
    }
    shoal::runc::RegistryOptions registry;
    if (config->has("insecure_registries")) {
      auto a = config->getArray("insecure_registries");
      if (!a) configError(kName, "config key \"insecure_registries\" must be an array of strings");
      for (std::size_t i = 0; i < a->size(); ++i) {
        if (!a->get(static_cast<unsigned>(i)).isString()) {
          configError(kName, "config key \"insecure_registries\" must be an array of strings");
        }
        registry.insecure.push_back(a->getElement<std::string>(static_cast<unsigned>(i)));
      }
    }
    registry.credentialsFile =
        config->has("registry_credentials") ? absoluteKey(*config, "registry_credentials", "") : "";
    registry.concurrentDownloads =
        static_cast<int>(intKey(*config, "concurrent_downloads", 3, 1, 32));
    // Docker's /etc/docker/certs.d, under Shoal's name: <dir>/<host:port>/*.crt.
    registry.certsDir = absoluteKey(*config, "registry_certs_dir", "/etc/shoal/certs.d");
    logMaxBytes_ =
        static_cast<uint64_t>(intKey(*config, "log_max_bytes", 10 << 20, 4096, int64_t(1) << 40));
    logMaxFiles_ = static_cast<int>(intKey(*config, "log_max_files", 3, 1, 100));
    registry_ = registry;
    // Resolved now (execve takes a path); a runtime installed later is found by describe, and
    // the start of a task then says it is missing.
    const std::string resolved = resolveProgram(runtime_);
    runc_ =
        std::make_unique<shoal::runc::Runc>(resolved.empty() ? runtime_ : resolved, runtimeRoot_);
    reload();
    watcher_ = std::make_unique<shoal::runc::ExitWatcher>(
        [this](const std::string& id, const shoal::runc::ExitInfo& exit) { onExit(id, exit); });
    for (auto& [id, t] : tasks_) {
      if (t.state == State::kStarting || t.state == State::kRunning) {
        watcher_->watch(id, stateDir(id));
      }
    }
    auto logError = [this](const std::string& what) {
      log(SHOAL_LOG_ERROR, std::string(kName) + ": " + what);
    };
    signals_ = std::make_unique<JobPool>(1, logError);
    probes_ = std::make_unique<JobPool>(2, logError);
    for (int i = 0; i < kWorkers; ++i) workers_.emplace_back([this] { workLoop(); });
    timer_ = std::thread([this] { timerLoop(); });
  }

  ~RuncRuntime() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    timerCv_.notify_all();
    std::vector<std::pair<std::thread, std::shared_ptr<std::atomic<bool>>>> follows;
    {
      std::lock_guard<std::mutex> lock(mu_);
      follows.swap(followThreads_);
    }
    for (auto& f : follows) f.first.join();  // each sees stopping_ within 200 ms
    if (signals_) signals_->stop();
    if (probes_) probes_->stop();
    for (auto& w : workers_) w.join();
    if (timer_.joinable()) timer_.join();
    watcher_.reset();
  }

  shoal_status describe(shoal_buf* out) {
    Poco::JSON::Object doc(Poco::JSON_PRESERVE_KEY_ORDER);
    doc.set("schema", std::string("shoal.node-runtime/v1"));
    doc.set("runtime", runtime_);
    doc.set("runtime_path", resolveProgram(runtime_));
    addNodeFacts(kName, doc);
    return reply(out, toJson(doc));
  }

  // ---- task ops ----------------------------------------------------------------------------

  shoal_status prepare(uint64_t op, shoal_str task_id, shoal_str task_json) {
    const std::string id(shoal::sdk::view(task_id));
    shoal::runc::TaskSpec spec = shoal::runc::parseTaskDocument(shoal::sdk::view(task_json));
    if (spec.id != id) {
      return fail(SHOAL_EINVAL, std::string(kName) + ": the task document is for task " + spec.id +
                                    ", not " + id);
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = tasks_.find(id); it != tasks_.end()) {
      // Idempotent: the current status, and the failure again for a failed prepare.
      const Task& t = it->second;
      if (t.state == State::kPreparing) {
        return fail(SHOAL_EEXIST, std::string(kName) + ": task " + id + " is being prepared");
      }
      complete(op, t.state == State::kFailed ? SHOAL_EIO : SHOAL_OK, statusDoc(t));
      return SHOAL_EAGAIN;
    }
    Task& t = tasks_[id];
    t.id = id;
    t.imageRef = spec.image;
    if (!spec.stopSignal.empty()) {
      t.stopSignal = shoal::runc::parseSignal(spec.stopSignal);
      if (t.stopSignal == 0) {
        tasks_.erase(id);
        return fail(SHOAL_EINVAL, std::string(kName) + ": task " + id + ": stop signal \"" +
                                      spec.stopSignal + "\" is not a signal");
      }
    }
    if (spec.stopGraceNs > 0) t.graceNs = spec.stopGraceNs;
    // Docker's default for a memory limit without --memory-swap: as much swap again.
    if (swapLimit_ && spec.memoryLimitBytes > 0 &&
        spec.memoryLimitBytes <= std::numeric_limits<int64_t>::max() / 2) {
      spec.memorySwapBytes = 2 * spec.memoryLimitBytes;
    }
    transition(t, State::kPreparing, "preparing image " + spec.image);
    t.busy = true;  // remove waits for the prepare to end
    enqueue([this, op, id, spec = std::move(spec)] { doPrepare(op, id, spec); });
    return SHOAL_EAGAIN;
  }

  shoal_status start(uint64_t op, shoal_str task_id) {
    const std::string id(shoal::sdk::view(task_id));
    std::lock_guard<std::mutex> lock(mu_);
    auto it = tasks_.find(id);
    if (it == tasks_.end() || it->second.state == State::kPreparing) {
      return fail(SHOAL_EINVAL, std::string(kName) + ": task " + id + " is not prepared");
    }
    Task& t = it->second;
    if (t.state != State::kReady) {
      return fail(SHOAL_EINVAL, std::string(kName) + ": task " + id + " is already started");
    }
    transition(t, State::kStarting, "starting");
    t.busy = true;
    t.startOp = op;  // an exit before the start finishes completes it (recordExit)
    enqueue([this, op, id] { doStart(op, id); });
    return SHOAL_EAGAIN;
  }

  shoal_status wait(uint64_t op, shoal_str task_id) {
    const std::string id(shoal::sdk::view(task_id));
    std::lock_guard<std::mutex> lock(mu_);
    auto it = tasks_.find(id);
    if (it == tasks_.end()) return unknown(id);
    if (exited(it->second.state)) {
      complete(op, SHOAL_OK, statusDoc(it->second));
    } else {
      it->second.waits.push_back(op);
      pendingWaits_[op] = id;
    }
    return SHOAL_EAGAIN;
  }

  shoal_status shutdown(uint64_t op, shoal_str task_id, int64_t grace_ns) {
    return stop(op, std::string(shoal::sdk::view(task_id)), grace_ns, false);
  }

  shoal_status terminate(uint64_t op, shoal_str task_id) {
    return stop(op, std::string(shoal::sdk::view(task_id)), 0, true);
  }

  shoal_status remove(uint64_t op, shoal_str task_id) {
    const std::string id(shoal::sdk::view(task_id));
    std::lock_guard<std::mutex> lock(mu_);
    auto it = tasks_.find(id);
    if (it == tasks_.end()) return unknown(id);
    Task& t = it->second;
    if (t.state == State::kStarting || t.state == State::kRunning || t.busy) {
      return fail(SHOAL_EBUSY,
                  std::string(kName) + ": task " + id + " is still running; shut it down first");
    }
    t.busy = true;
    enqueue([this, op, id] { doRemove(op, id); });
    return SHOAL_EAGAIN;
  }

  shoal_status inspect(shoal_str task_id, shoal_buf* out) {
    const std::string id(shoal::sdk::view(task_id));
    std::lock_guard<std::mutex> lock(mu_);
    auto it = tasks_.find(id);
    if (it == tasks_.end()) return unknown(id);
    return reply(out, statusDoc(it->second));
  }

  shoal_status list(shoal_buf* out) {
    std::lock_guard<std::mutex> lock(mu_);
    std::string text = "[";
    for (const auto& [id, t] : tasks_) {
      if (text.size() > 1) text += ',';
      text += statusDoc(t);
    }
    text += ']';
    return reply(out, text);
  }

  shoal_status logs(uint64_t op, shoal_str task_id, shoal_str options_json) {
    const std::string id(shoal::sdk::view(task_id));
    JObject::Ptr opts = parseObject(std::string(shoal::sdk::view(options_json).empty()
                                                    ? std::string_view("{}")
                                                    : shoal::sdk::view(options_json)));
    if (!opts)
      return fail(SHOAL_EINVAL, std::string(kName) + ": logs options are not a JSON object");
    for (const auto& k : opts->getNames()) {
      if (k != "follow" && k != "tail" && k != "since_ns" && k != "timestamps") {
        return fail(SHOAL_EINVAL, std::string(kName) + ": unknown logs option \"" + k + "\"");
      }
    }
    LogRequest req;
    req.op = op;
    req.id = id;
    try {
      req.follow = opts->optValue<bool>("follow", false);
      req.tail = opts->optValue<int>("tail", -1);
      req.sinceNs = opts->optValue<int64_t>("since_ns", 0);
      req.timestamps = opts->optValue<bool>("timestamps", false);
    } catch (const std::exception&) {
      return fail(SHOAL_EINVAL, std::string(kName) + ": logs options have the wrong types");
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (tasks_.count(id) == 0) return unknown(id);
    follows_[op] = false;
    if (!req.follow) {
      enqueue([this, req] { doLogs(req); });
      return SHOAL_EAGAIN;
    }
    // A follow lasts as long as its task: a thread of its own, so it never holds a worker.
    for (auto it = followThreads_.begin(); it != followThreads_.end();) {
      if (*it->second) {
        it->first.join();  // ended: its last act was setting the flag
        it = followThreads_.erase(it);
      } else {
        ++it;
      }
    }
    auto ended = std::make_shared<std::atomic<bool>>(false);
    followThreads_.emplace_back(std::thread([this, req, ended] {
                                  doLogs(req);
                                  *ended = true;
                                }),
                                ended);
    return SHOAL_EAGAIN;
  }

  shoal_status cancel(uint64_t op) {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = pendingWaits_.find(op); it != pendingWaits_.end()) {
      auto t = tasks_.find(it->second);
      if (t != tasks_.end()) {
        auto& w = t->second.waits;
        w.erase(std::remove(w.begin(), w.end(), op), w.end());
      }
      pendingWaits_.erase(it);
      complete(op, SHOAL_ECANCELED, "{\"message\":\"canceled\"}");
      return SHOAL_OK;
    }
    if (auto it = follows_.find(op); it != follows_.end()) {
      it->second = true;  // the follower sees it and ends with ECANCELED
      return SHOAL_OK;
    }
    return fail(SHOAL_ENOENT, std::string(kName) + ": no pending op " + std::to_string(op));
  }

  // ---- image ops ---------------------------------------------------------------------------

  shoal_status imagePull(uint64_t op, shoal_str ref) {
    const std::string r(shoal::sdk::view(ref));
    std::lock_guard<std::mutex> lock(mu_);
    enqueue([this, op, r] {
      runImageOp(op, [&] {
        const bool had = images().find(r).has_value();
        shoal::runc::Image img = images().pull(r);
        JObject::Ptr doc = imageDoc(img);
        doc->set("downloaded", !had);
        return toJson(*doc);
      });
    });
    return SHOAL_EAGAIN;
  }

  shoal_status imageResolve(uint64_t op, shoal_str ref) {
    const std::string r(shoal::sdk::view(ref));
    std::lock_guard<std::mutex> lock(mu_);
    enqueue([this, op, r] {
      runImageOp(op, [&] {
        JObject doc(Poco::JSON_PRESERVE_KEY_ORDER);
        doc.set("schema", std::string("shoal.image-resolve/v1"));
        doc.set("ref", r);
        // As Docker pins it: "busybox:v1@sha256:...", the name as the user spells it.
        doc.set("pinned", shoal::runc::parseReference(images().resolve(r)).familiar());
        return toJson(doc);
      });
    });
    return SHOAL_EAGAIN;
  }

  shoal_status imageLoad(uint64_t op, shoal_str path) {
    const std::string p(shoal::sdk::view(path));
    std::lock_guard<std::mutex> lock(mu_);
    enqueue([this, op, p] {
      runImageOp(op, [&] {
        JArray out;
        for (const auto& img : images().load(p)) out.add(imageDoc(img));
        std::ostringstream text;
        out.stringify(text);
        return text.str();
      });
    });
    return SHOAL_EAGAIN;
  }

  shoal_status imageList(shoal_buf* out) {
    JArray all;
    for (const auto& img : images().list()) all.add(imageDoc(img));
    std::ostringstream text;
    all.stringify(text);
    return reply(out, text.str());
  }

  shoal_status imageRemove(uint64_t op, shoal_str ref, int32_t force) {
    const std::string r(shoal::sdk::view(ref));
    std::lock_guard<std::mutex> lock(mu_);
    enqueue([this, op, r, force] {
      runImageOp(op, [&] {
        std::optional<shoal::runc::Image> before = images().find(r);
        if (!before) {
          throw Error(SHOAL_ENOENT, std::string(kName) + ": No such image: " + r);
        }
        images().remove(r, force != 0);
        std::optional<shoal::runc::Image> after = images().find(before->id);
        JObject doc;
        JArray::Ptr untagged = new JArray;
        JArray::Ptr deleted = new JArray;
        for (const auto& tag : before->tags) {
          if (!after ||
              std::find(after->tags.begin(), after->tags.end(), tag) == after->tags.end()) {
            untagged->add(tag);
          }
        }
        if (!after) {
          deleted->add(before->id);
          images().gc();
        }
        doc.set("untagged", untagged);
        doc.set("deleted", deleted);
        return toJson(doc);
      });
    });
    return SHOAL_EAGAIN;
  }

 private:
  struct LogRequest {
    uint64_t op = 0;
    std::string id;
    bool follow = false;
    int tail = -1;
    int64_t sinceNs = 0;
    bool timestamps = false;
  };

  // ---- config helpers ----------------------------------------------------------------------

  static std::string stringKey(const JObject& config, const char* key, const std::string& def) {
    if (!config.has(key)) return def;
    const Poco::Dynamic::Var& v = config.get(key);
    if (!v.isString())
      configError(kName, std::string("config key \"") + key + "\" must be a string");
    std::string s = v.extract<std::string>();
    if (s.find('\0') != std::string::npos) {
      configError(kName, std::string("config key \"") + key + "\" holds a NUL byte");
    }
    return s;
  }

  static std::string absoluteKey(const JObject& config, const char* key, const std::string& def) {
    std::string s = stringKey(config, key, def);
    if (s.empty() || s[0] != '/') {
      configError(kName, std::string("config key \"") + key + "\" must be an absolute path");
    }
    return s;
  }

  static int64_t intKey(const JObject& config, const char* key, int64_t def, int64_t min,
                        int64_t max) {
    if (!config.has(key)) return def;
    const Poco::Dynamic::Var& v = config.get(key);
    int64_t n = 0;
    try {
      if (!v.isInteger()) throw std::runtime_error("not an integer");
      n = v.convert<int64_t>();
    } catch (const std::exception&) {
      configError(kName, std::string("config key \"") + key + "\" must be an integer");
    }
    if (n < min || n > max) {
      configError(kName, std::string("config key \"") + key + "\" must be between " +
                             std::to_string(min) + " and " + std::to_string(max));
    }
    return n;
  }

  // The image store, made at its first use so that loading the plugin (a daemon that runs no
  // containers, a unit test) writes nothing.
  shoal::runc::ImageStore& images() {
    std::call_once(imagesOnce_, [this] {
      images_ = std::make_unique<shoal::runc::ImageStore>(root_ + "/images", registry_);
    });
    return *images_;
  }

  // ---- paths -------------------------------------------------------------------------------

  std::string taskDir(const std::string& id) const { return root_ + "/containers/" + id; }
  std::string stateDir(const std::string& id) const { return taskDir(id) + "/shim"; }
  std::string rootfsDir(const std::string& id) const { return taskDir(id) + "/rootfs"; }
  std::string cgroupsPath(const std::string& id) const { return "/" + cgroupParent_ + "/" + id; }

  shoal_status unknown(const std::string& id) const {
    return fail(SHOAL_ENOENT, std::string(kName) + ": no task " + id);
  }

  // ---- state (mu_ held) --------------------------------------------------------------------

  std::string statusDoc(const Task& t) const {
    JObject doc(Poco::JSON_PRESERVE_KEY_ORDER);
    doc.set("schema", std::string("shoal.task-status/v1"));
    doc.set("task_id", t.id);
    doc.set("state", std::string(stateName(t.state)));
    doc.set("pid", t.pid);
    doc.set("exit_code", t.exitCode);
    doc.set("oom_killed", t.oomKilled);
    doc.set("health", t.healthState);
    doc.set("message", t.message);
    doc.set("timestamp_ns", t.stampNs);
    return toJson(doc);
  }

  void persist(const Task& t) {
    JObject doc(Poco::JSON_PRESERVE_KEY_ORDER);
    doc.set("schema", std::string("shoal.runtime-runc-task/v1"));
    doc.set("id", t.id);
    doc.set("state", std::string(stateName(t.state)));
    doc.set("image_ref", t.imageRef);
    doc.set("image_id", t.imageId);
    doc.set("stop_signal", t.stopSignal);
    doc.set("grace_ns", t.graceNs);
    doc.set("pid", t.pid);
    doc.set("exit_code", t.exitCode);
    doc.set("oom_killed", t.oomKilled);
    doc.set("message", t.message);
    doc.set("timestamp_ns", t.stampNs);
    doc.set("mounted", t.mounted);
    doc.set("health_state", t.healthState);
    doc.set("stop_requested", t.stopRequested);
    if (t.health) {
      JObject::Ptr h = new JObject;
      h->set("test", toArray(t.health->test));
      h->set("interval_ns", t.health->intervalNs);
      h->set("timeout_ns", t.health->timeoutNs);
      h->set("start_period_ns", t.health->startPeriodNs);
      h->set("retries", t.health->retries);
      doc.set("health", h);
    }
    try {
      mkdirs(taskDir(t.id), 0700);
      writeFileAtomic(taskDir(t.id) + "/task.json", toJson(doc));
    } catch (const std::exception& e) {
      log(SHOAL_LOG_ERROR, e.what());
    }
  }

  // Moves `t` to `s` (stamped now), persists it and tells the kernel.
  void transition(Task& t, State s, const std::string& message) {
    t.state = s;
    t.message = message;
    t.stampNs = wallNs();
    persist(t);
    postRetrying(SHOAL_EVENT_TASK_STATUS, 0, SHOAL_OK, t.id, statusDoc(t));
  }

  void complete(uint64_t op, shoal_status status, const std::string& json) {
    postRetrying(SHOAL_EVENT_OP_DONE, op, status, {}, json);
  }

  // host->post refuses (ENOMEM) while its queue is full; events of one task keep their order
  // because every post happens under mu_.
  void postRetrying(int32_t type, uint64_t op, shoal_status status, std::string_view subject,
                    const std::string& json) {
    for (int attempt = 0; attempt < 200; ++attempt) {
      shoal_status s = post(type, op, status, subject, json);
      if (s != SHOAL_ENOMEM) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    log(SHOAL_LOG_ERROR, std::string(kName) +
                             ": the host's event queue stayed full; an event "
                             "for " +
                             std::string(subject) + " was dropped");
  }

  // Finishes every wait and stop on `t`, which has just ended. mu_ held.
  void finishWaiters(Task& t) {
    const std::string doc = statusDoc(t);
    for (uint64_t w : t.waits) {
      pendingWaits_.erase(w);
      complete(w, SHOAL_OK, doc);
    }
    t.waits.clear();
    for (uint64_t op : t.stops) complete(op, SHOAL_OK, doc);
    t.stops.clear();
  }

  void failPrepare(uint64_t op, Task& t, const std::string& why) {
    t.busy = false;
    transition(t, State::kFailed, why);
    complete(op, SHOAL_EIO, statusDoc(t));
    finishWaiters(t);
  }

  // Records the container's exit (from the watcher, or found at reload) and finishes whatever
  // waited for it.
  void recordExit(Task& t, const shoal::runc::ExitInfo& exit) {
    if (exited(t.state)) return;
    t.exitCode = exit.exitCode;
    t.oomKilled = exit.oomKilled;
    std::string message;
    State s;
    if (t.healthState == "unhealthy") {
      s = State::kFailed;
      message = t.message.rfind("unhealthy container", 0) == 0 ? t.message : "unhealthy container";
    } else if (t.stopRequested) {
      s = State::kShutdown;
      message = exit.signal == SIGKILL ? "killed by SIGKILL after the grace period"
                                       : "exited with code " + std::to_string(exit.exitCode);
    } else if (exit.oomKilled) {
      s = State::kFailed;
      message = "OOM killed (memory limit reached): exit code " + std::to_string(exit.exitCode);
    } else if (exit.exitCode == 0 && exit.signal == 0) {
      s = State::kComplete;
      message = "exited with code 0";
    } else {
      s = State::kFailed;
      message = !exit.message.empty() ? exit.message
                                      : "exited with code " + std::to_string(exit.exitCode);
    }
    t.killToken++;  // no kill after the exit
    transition(t, s, message);
    const std::string doc = statusDoc(t);
    if (t.startOp != 0) {
      complete(t.startOp, SHOAL_EIO, doc);
      t.startOp = 0;
      t.busy = false;
    }
    finishWaiters(t);
  }

  void onExit(const std::string& id, const shoal::runc::ExitInfo& exit) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = tasks_.find(id);
    if (it == tasks_.end()) return;
    recordExit(it->second, exit);
  }

  shoal_status stop(uint64_t op, const std::string& id, int64_t graceNs, bool now) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = tasks_.find(id);
    if (it == tasks_.end()) return unknown(id);
    Task& t = it->second;
    if (exited(t.state)) {
      complete(op, SHOAL_OK, statusDoc(t));
      return SHOAL_EAGAIN;
    }
    if (t.state == State::kReady || t.state == State::kPreparing) {
      // Never started: nothing to signal (a prepare still running finishes into shutdown).
      t.stopRequested = true;
      if (t.state == State::kReady) {
        transition(t, State::kShutdown, "shut down before it started");
        complete(op, SHOAL_OK, statusDoc(t));
        finishWaiters(t);
      } else {
        t.stops.push_back(op);
      }
      return SHOAL_EAGAIN;
    }
    t.stopRequested = true;
    t.stops.push_back(op);
    if (t.pid == 0 && t.busy) {
      // Still inside runc run: the start job sees stopRequested and kills it.
      ++t.killToken;
      return SHOAL_EAGAIN;
    }
    signalThenKill(t, now ? 0 : (graceNs >= 0 ? graceNs : t.graceNs), now);
    return SHOAL_EAGAIN;
  }

  // Sends the stop signal now (SIGKILL with `now`) and SIGKILL once `graceNs` passed, unless
  // the container exited by then. mu_ held.
  void signalThenKill(Task& t, int64_t graceNs, bool now) {
    const std::string id = t.id;
    const int signal = now ? SIGKILL : t.stopSignal;
    const uint64_t token = ++t.killToken;
    signals_->post([this, id, signal] { signalTask(id, signal, signal == SIGKILL); });
    if (now) return;
    schedule(monoNs() + graceNs, [this, id, token] {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = tasks_.find(id);
      if (it == tasks_.end() || it->second.killToken != token || exited(it->second.state)) {
        return;
      }
      signals_->post([this, id] { signalTask(id, SIGKILL, true); });
    });
  }

  // ---- workers -----------------------------------------------------------------------------

  void enqueue(std::function<void()> job) {
    jobs_.push_back(std::move(job));
    cv_.notify_one();
  }

  void workLoop() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
      if (stopping_) return;
      auto job = std::move(jobs_.front());
      jobs_.pop_front();
      lock.unlock();
      try {
        job();
      } catch (const std::exception& e) {
        log(SHOAL_LOG_ERROR, std::string(kName) + ": " + e.what());
      }
      lock.lock();
    }
  }

  void schedule(int64_t dueMono, std::function<void()> fn) {
    timers_.push(Timer{dueMono, nextTimer_++, std::move(fn)});
    timerCv_.notify_one();
  }

  void timerLoop() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      if (stopping_) return;
      if (timers_.empty()) {
        timerCv_.wait(lock);
        continue;
      }
      const int64_t now = monoNs();
      if (timers_.top().due > now) {
        timerCv_.wait_for(lock, std::chrono::nanoseconds(timers_.top().due - now));
        continue;
      }
      Timer t = timers_.top();
      timers_.pop();
      lock.unlock();
      try {
        t.fn();
      } catch (const std::exception& e) {
        log(SHOAL_LOG_ERROR, std::string(kName) + ": " + e.what());
      }
      lock.lock();
    }
  }

  // The stop signal goes to the container's init, as Docker sends it; SIGKILL to every process.
  void signalTask(const std::string& id, int signal, bool all) {
    try {
      runc_->kill(id, signal, all);
    } catch (const Error& e) {
      // Already gone is fine: the exit is recorded by the shim either way.
      log(SHOAL_LOG_INFO, e.what());
    }
  }

  void doPrepare(uint64_t op, const std::string& id, const shoal::runc::TaskSpec& spec) {
    shoal::runc::Image img;
    try {
      img = images().ensure(spec.image);
      {
        // Recorded before the hold is taken: a crash in between leaves a record whose remove
        // releases a hold that may not exist (harmless), never a hold nobody releases.
        std::lock_guard<std::mutex> lock(mu_);
        auto it = tasks_.find(id);
        if (it != tasks_.end()) {
          it->second.imageId = img.id;
          persist(it->second);
        }
      }
      images().acquire(img.id, id);
    } catch (const std::exception& e) {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = tasks_.find(id);
      if (it == tasks_.end()) return;
      failPrepare(op, it->second, e.what());
      return;
    }
    std::string error;
    try {
      mkdirs(taskDir(id), 0700);
      for (const char* d : {"/upper", "/work", "/rootfs", "/shim"}) mkdirs(taskDir(id) + d, 0700);
      std::vector<std::string> lower = images().layerDirs(img);
      if (lower.empty()) {
        mkdirs(taskDir(id) + "/empty", 0755);
        lower.push_back(taskDir(id) + "/empty");
      }
      mountOverlay(lower, taskDir(id) + "/upper", taskDir(id) + "/work", rootfsDir(id), id);
      {
        std::lock_guard<std::mutex> lock(mu_);
        auto it = tasks_.find(id);
        if (it != tasks_.end()) it->second.mounted = true;
      }
      shoal::runc::ImageDefaults defaults;
      defaults.env = img.config.env;
      defaults.entrypoint = img.config.entrypoint;
      defaults.cmd = img.config.cmd;
      defaults.workingDir = img.config.workingDir;
      defaults.user = img.config.user;
      defaults.stopSignal = img.config.stopSignal;
      // A task in a network plugin's namespace gets resolv.conf, hosts and hostname from its
      // "dns" and "addresses", kept beside config.json and bound over the image's files.
      shoal::runc::writeNetworkFiles(spec, taskDir(id));
      writeFileAtomic(
          taskDir(id) + "/config.json",
          shoal::runc::buildOciConfig(spec, defaults, rootfsDir(id), cgroupsPath(id),
                                      isExecutableFile(init_) ? init_ : "", taskDir(id), seccomp_));
    } catch (const std::exception& e) {
      error = e.what();
    }
    if (!error.empty()) {
      // Nothing of a failed prepare stays: a task in a restart loop must not pile up mounts
      // or keep its image from being removed.
      ::umount2(rootfsDir(id).c_str(), MNT_DETACH);
      try {
        images().release(img.id, id);
      } catch (const std::exception& e) {
        log(SHOAL_LOG_WARN, e.what());
      }
    }
    std::lock_guard<std::mutex> lock(mu_);
    auto it = tasks_.find(id);
    if (it == tasks_.end()) return;
    Task& t = it->second;
    if (!error.empty()) {
      t.mounted = false;
      t.imageId.clear();
      failPrepare(op, t, error);
      return;
    }
    if (spec.stopSignal.empty() && !img.config.stopSignal.empty()) {
      if (int sig = shoal::runc::parseSignal(img.config.stopSignal); sig != 0) t.stopSignal = sig;
    }
    t.health = resolveHealth(spec.healthcheckJson, img.config.healthcheckJson);
    t.busy = false;
    if (t.stopRequested) {
      transition(t, State::kShutdown, "shut down before it started");
      complete(op, SHOAL_OK, statusDoc(t));
      finishWaiters(t);
      return;
    }
    transition(t, State::kReady, "prepared");
    complete(op, SHOAL_OK, statusDoc(t));
  }

  void doStart(uint64_t op, const std::string& id) {
    shoal::runc::ShimOptions o;
    o.shimPath = shim_;
    o.runtimePath = resolveProgram(runtime_);
    o.runtimeRoot = runtimeRoot_;
    o.id = id;
    o.bundleDir = taskDir(id);
    o.cgroupsPath = cgroupsPath(id);
    o.stateDir = stateDir(id);
    o.logMaxBytes = logMaxBytes_;
    o.logMaxFiles = logMaxFiles_;
    int pid = 0;
    std::string error;
    if (o.runtimePath.empty()) {
      error = std::string(kName) + ": the OCI runtime \"" + runtime_ + "\" is not installed";
    } else {
      try {
        o.tty = bundleHasTerminal(taskDir(id) + "/config.json");
        pid = shoal::runc::launchShim(o);
      } catch (const std::exception& e) {
        error = e.what();
      }
    }
    // Watched before the record says running: an exit that comes at once is recorded by the
    // watcher (its callback takes mu_, so not under it).
    if (error.empty()) watcher_->watch(id, stateDir(id));
    std::lock_guard<std::mutex> lock(mu_);
    auto it = tasks_.find(id);
    if (it == tasks_.end()) return;
    Task& t = it->second;
    if (error.empty() && exited(t.state)) return;  // recordExit finished the start already
    t.startOp = 0;
    if (!error.empty()) {
      t.busy = false;
      t.exitCode = 128;
      transition(t, State::kFailed, error);
      complete(op, SHOAL_EIO, statusDoc(t));
      finishWaiters(t);
      return;
    }
    t.pid = pid;
    t.startedMono = monoNs();
    if (t.stopRequested) {
      // A stop came while runc was starting it: stopped as any running task is.
      t.busy = false;
      transition(t, State::kRunning, "started");
      complete(op, SHOAL_OK, statusDoc(t));
      signalThenKill(t, t.graceNs, false);
      return;
    }
    if (t.health) {
      // Swarm's rule: a task with a health check is started once it is healthy.
      t.healthState = "starting";
      t.startOp = op;
      persist(t);
      scheduleHealth(t, monoNs() + t.health->intervalNs);  // Docker's first probe: one interval in
      return;
    }
    t.busy = false;
    transition(t, State::kRunning, "started");
    complete(op, SHOAL_OK, statusDoc(t));
  }

  void scheduleHealth(const Task& t, int64_t dueMono) {
    const std::string id = t.id;
    const int64_t started = t.startedMono;
    schedule(dueMono, [this, id, started] {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = tasks_.find(id);
      if (it == tasks_.end() || it->second.startedMono != started || !it->second.health ||
          exited(it->second.state) || it->second.stopRequested) {
        return;
      }
      probes_->post([this, id, started] { runHealthCheck(id, started); });
    });
  }

  void runHealthCheck(const std::string& id, int64_t started) {
    Health h;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = tasks_.find(id);
      if (it == tasks_.end() || !it->second.health) return;
      h = *it->second.health;
    }
    bool ok = false;
    std::string output;
    try {
      shoal::runc::ExecResult r =
          runc_->exec(id, h.test, static_cast<int>(h.timeoutNs / 1'000'000));
      ok = !r.timedOut && r.exitCode == 0;
      output = r.timedOut ? "health check timed out" : r.output;
    } catch (const std::exception& e) {
      output = e.what();
    }
    std::lock_guard<std::mutex> lock(mu_);
    auto it = tasks_.find(id);
    if (it == tasks_.end() || it->second.startedMono != started || exited(it->second.state)) {
      return;
    }
    Task& t = it->second;
    const bool inStartPeriod = monoNs() - t.startedMono < h.startPeriodNs;
    if (ok) {
      t.healthFailures = 0;
      if (t.healthState != "healthy") {
        t.healthState = "healthy";
        if (t.startOp != 0) {
          const uint64_t op = t.startOp;
          t.startOp = 0;
          t.busy = false;
          transition(t, State::kRunning, "started (healthy)");
          complete(op, SHOAL_OK, statusDoc(t));
        } else {
          transition(t, t.state, "healthy");
        }
      }
    } else if (!inStartPeriod || t.healthState == "healthy") {
      if (++t.healthFailures >= h.retries) {
        t.healthState = "unhealthy";
        t.message = "unhealthy container: " + output.substr(0, 200);
        persist(t);
        postRetrying(SHOAL_EVENT_TASK_STATUS, 0, SHOAL_OK, t.id, statusDoc(t));
        // Swarm replaces an unhealthy task: stopped as any task is, it ends as failed
        // (recordExit says why).
        signalThenKill(t, t.graceNs, false);
        return;
      }
    }
    scheduleHealth(t, monoNs() + h.intervalNs);
  }

  void doRemove(uint64_t op, const std::string& id) {
    std::string imageId;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = tasks_.find(id);
      if (it == tasks_.end()) return;
      imageId = it->second.imageId;
    }
    watcher_->unwatch(id);
    std::string error;
    try {
      runc_->remove(id, true);  // forced: a container runc never created is not an error
    } catch (const std::exception& e) {
      error = e.what();
    }
    // Unmounted whatever the record says: a crash between mount and record leaves a mount.
    if (::umount2(rootfsDir(id).c_str(), MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT) {
      error = std::string(kName) + ": cannot unmount the rootfs of task " + id + ": " +
              std::strerror(errno);
    }
    if (error.empty()) removeTree(taskDir(id));
    if (error.empty() && !imageId.empty()) {
      try {
        images().release(imageId, id);
      } catch (const std::exception& e) {
        log(SHOAL_LOG_WARN, e.what());
      }
    }
    if (!error.empty()) watcher_->watch(id, stateDir(id));  // it may still run: keep watching
    std::lock_guard<std::mutex> lock(mu_);
    auto it = tasks_.find(id);
    if (it == tasks_.end()) return;
    Task& t = it->second;
    t.busy = false;
    if (!error.empty()) {
      JObject doc;
      doc.set("message", error);
      complete(op, SHOAL_EIO, toJson(doc));
      return;
    }
    const std::string doc = statusDoc(t);
    for (uint64_t w : t.waits) {
      pendingWaits_.erase(w);
      complete(w, SHOAL_ECANCELED, doc);
    }
    tasks_.erase(it);
    complete(op, SHOAL_OK, doc);
  }

  void doLogs(const LogRequest& req) {
    auto emit = [&](const std::vector<shoal::runc::LogRecord>& records, bool eof) {
      JObject doc(Poco::JSON_PRESERVE_KEY_ORDER);
      doc.set("schema", std::string("shoal.log-chunk/v1"));
      doc.set("task_id", req.id);
      JArray::Ptr recs = new JArray;
      for (const auto& r : records) {
        JObject::Ptr o = new JObject(Poco::JSON_PRESERVE_KEY_ORDER);
        o->set("stream", r.stream);
        o->set("timestamp_ns", r.timestampNs);
        o->set("line",
               req.timestamps ? shoal::plugins::rfc3339(r.timestampNs) + " " + r.line : r.line);
        recs->add(o);
      }
      doc.set("records", recs);
      doc.set("eof", eof);
      std::lock_guard<std::mutex> lock(mu_);
      postRetrying(SHOAL_EVENT_LOG_CHUNK, req.op, SHOAL_OK, req.id, toJson(doc));
    };
    shoal_status end = SHOAL_OK;
    try {
      if (!req.follow) {
        emit(shoal::runc::readLogs(stateDir(req.id), req.tail, req.sinceNs), false);
      } else {
        shoal::runc::LogFollower follower(stateDir(req.id), req.tail, req.sinceNs);
        emit(follower.poll(), false);
        for (;;) {
          {
            std::lock_guard<std::mutex> lock(mu_);
            auto f = follows_.find(req.op);
            if (stopping_ || f == follows_.end() || f->second) {
              end = SHOAL_ECANCELED;
              break;
            }
            auto t = tasks_.find(req.id);
            if (t == tasks_.end()) break;  // removed
          }
          if (follower.finished()) break;
          follower.wait(200);
          auto more = follower.poll();
          if (!more.empty()) emit(more, false);
        }
      }
    } catch (const std::exception& e) {
      std::lock_guard<std::mutex> lock(mu_);
      follows_.erase(req.op);
      JObject doc;
      doc.set("message", std::string(e.what()));
      complete(req.op, SHOAL_EIO, toJson(doc));
      return;
    }
    if (req.follow) emit({}, true);
    std::lock_guard<std::mutex> lock(mu_);
    follows_.erase(req.op);
    complete(req.op, end, end == SHOAL_OK ? "{}" : "{\"message\":\"canceled\"}");
  }

  template <class F>
  void runImageOp(uint64_t op, F&& fn) {
    try {
      std::string result = fn();
      std::lock_guard<std::mutex> lock(mu_);
      complete(op, SHOAL_OK, result);
    } catch (const Error& e) {
      JObject doc;
      doc.set("message", std::string(e.what()));
      std::lock_guard<std::mutex> lock(mu_);
      complete(op, e.code() < 0 ? e.code() : SHOAL_EIO, toJson(doc));
    } catch (const std::exception& e) {
      JObject doc;
      doc.set("message", std::string(kName) + ": " + e.what());
      std::lock_guard<std::mutex> lock(mu_);
      complete(op, SHOAL_EIO, toJson(doc));
    }
  }

  JObject::Ptr imageDoc(const shoal::runc::Image& img) const {
    JObject::Ptr doc = new JObject(Poco::JSON_PRESERVE_KEY_ORDER);
    doc->set("schema", std::string("shoal.image/v1"));
    doc->set("id", img.id);
    doc->set("repo_tags", toArray(img.tags));
    doc->set("repo_digests", toArray(img.repoDigests));
    doc->set("size", img.size);
    doc->set("created_ns", img.createdNs);
    doc->set("os", img.os);
    doc->set("architecture", img.architecture);
    doc->set("layers", toArray(img.layers));
    JObject::Ptr c = new JObject(Poco::JSON_PRESERVE_KEY_ORDER);
    c->set("env", toArray(img.config.env));
    c->set("entrypoint", toArray(img.config.entrypoint));
    c->set("cmd", toArray(img.config.cmd));
    c->set("workdir", img.config.workingDir);
    c->set("user", img.config.user);
    c->set("stop_signal", img.config.stopSignal);
    if (!img.config.healthcheckJson.empty()) {
      if (auto h = parseObject(img.config.healthcheckJson)) c->set("healthcheck", h);
    }
    JObject::Ptr labels = new JObject;
    for (const auto& [k, v] : img.config.labels) labels->set(k, v);
    c->set("labels", labels);
    doc->set("config", c);
    int inUse = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const auto& [id, t] : tasks_) inUse += t.imageId == img.id ? 1 : 0;
    }
    doc->set("in_use", inUse);
    return doc;
  }

  // Reads back every task this runtime had (containers/*/task.json): after a shoald restart
  // the shims kept the containers running; their exits while nobody watched are in the shims'
  // files.
  void reload() {
    const std::string dir = root_ + "/containers";
    DIR* d = opendir(dir.c_str());
    if (!d) return;
    std::vector<std::string> ids;
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] != '.') ids.emplace_back(e->d_name);
    }
    closedir(d);
    for (const auto& id : ids) {
      auto text = readFile(taskDir(id) + "/task.json");
      if (!text) continue;  // a directory a crash left before its first record
      JObject::Ptr o = parseObject(*text);
      std::optional<State> state;
      if (o) state = stateFromName(o->optValue<std::string>("state", ""));
      if (!o || !state || o->optValue<std::string>("id", "") != id) {
        throw Error(SHOAL_EIO, std::string(kName) + ": state file " + taskDir(id) +
                                   "/task.json is corrupt (move the directory away to start "
                                   "without that task)");
      }
      Task t;
      t.id = id;
      t.state = *state;
      t.imageRef = o->optValue<std::string>("image_ref", "");
      t.imageId = o->optValue<std::string>("image_id", "");
      t.stopSignal = o->optValue<int>("stop_signal", SIGTERM);
      t.graceNs = o->optValue<int64_t>("grace_ns", t.graceNs);
      t.pid = o->optValue<int>("pid", 0);
      t.exitCode = o->optValue<int>("exit_code", 0);
      t.oomKilled = o->optValue<bool>("oom_killed", false);
      t.message = o->optValue<std::string>("message", "");
      t.stampNs = o->optValue<int64_t>("timestamp_ns", 0);
      t.mounted = o->optValue<bool>("mounted", false);
      t.healthState = o->optValue<std::string>("health_state", "");
      t.stopRequested = o->optValue<bool>("stop_requested", false);
      if (auto h = o->getObject("health")) {
        Health health;
        health.test = stringArray(h, "test");
        health.intervalNs = h->optValue<int64_t>("interval_ns", health.intervalNs);
        health.timeoutNs = h->optValue<int64_t>("timeout_ns", health.timeoutNs);
        health.startPeriodNs = h->optValue<int64_t>("start_period_ns", 0);
        health.retries = h->optValue<int>("retries", 3);
        if (!health.test.empty()) t.health = health;
      }
      if (t.state == State::kPreparing) {
        // A prepare cut short: failed (the agent reports it rejected and the orchestrator
        // gives the slot a new task; removing this one frees what it got so far).
        t.state = State::kFailed;
        t.message = "preparation was interrupted by a restart";
      }
      t.startedMono = monoNs();
      if (t.state == State::kStarting || t.state == State::kRunning) {
        shoal::runc::ContainerStatus cs = shoal::runc::readStatus(stateDir(id));
        if (cs.pid != 0) t.pid = cs.pid;
        if (cs.exit) {
          tasks_[id] = t;
          recordExit(tasks_[id], *cs.exit);
          continue;
        }
        if (t.state == State::kStarting && cs.pid != 0) t.state = State::kRunning;
      }
      tasks_[id] = std::move(t);
    }
    for (auto& [id, t] : tasks_) {
      if (t.state == State::kRunning && t.health)
        scheduleHealth(t, monoNs() + t.health->intervalNs);
    }
  }

  struct Timer {
    int64_t due;
    uint64_t seq;
    std::function<void()> fn;
    bool operator<(const Timer& o) const { return due != o.due ? due > o.due : seq > o.seq; }
  };

  std::string runtime_ = "runc";  // the OCI runtime binary: a name looked up in PATH, or a path
  std::string root_ = "/var/lib/shoal/runtime-runc";
  std::string runtimeRoot_ = "/run/shoal/runc";
  std::string shim_ = SHOAL_SHIM_PATH;
  std::string cgroupParent_ = "shoal";
  std::string init_ = "/usr/bin/tini-static";  // Docker's --init (Debian's tini package)
  uint64_t logMaxBytes_ = 10 << 20;
  int logMaxFiles_ = 3;

  shoal::runc::RegistryOptions registry_;
  std::once_flag imagesOnce_;
  bool seccomp_ = true;     // containers get seccomp.h's filter (config "seccomp": "default")
  bool swapLimit_ = false;  // this host limits swap: memory + swap = twice the memory limit
  std::unique_ptr<shoal::runc::ImageStore> images_;  // made at first use; thread-safe itself
  std::unique_ptr<shoal::runc::Runc> runc_;          // stateless calls
  std::unique_ptr<shoal::runc::ExitWatcher> watcher_;

  mutable std::mutex mu_;
  std::condition_variable cv_;                    // jobs_ or stopping_ changed
  std::condition_variable timerCv_;               // timers_ or stopping_ changed
  bool stopping_ = false;                         // guarded by mu_
  std::map<std::string, Task> tasks_;             // guarded by mu_
  std::map<uint64_t, std::string> pendingWaits_;  // guarded by mu_: wait op -> task
  std::map<uint64_t, bool> follows_;              // guarded by mu_: logs op -> cancelled
  std::deque<std::function<void()>> jobs_;        // guarded by mu_
  std::priority_queue<Timer> timers_;             // guarded by mu_
  uint64_t nextTimer_ = 0;                        // guarded by mu_
  std::vector<std::thread> workers_;
  std::thread timer_;
  // Follows (`logs --follow`) last as long as their task: a thread each, reaped as they end.
  std::vector<std::pair<std::thread, std::shared_ptr<std::atomic<bool>>>>
      followThreads_;                 // guarded by mu_
  std::unique_ptr<JobPool> signals_;  // runc kill
  std::unique_ptr<JobPool> probes_;   // health checks
};

const shoal_runtime_ops kOps = [] {
  using shoal::sdk::op;
  shoal_runtime_ops o{};
  o.struct_size = sizeof o;
  o.describe = op<&RuncRuntime::describe>;
  o.prepare = op<&RuncRuntime::prepare>;
  o.start = op<&RuncRuntime::start>;
  o.wait = op<&RuncRuntime::wait>;
  o.shutdown = op<&RuncRuntime::shutdown>;
  o.terminate = op<&RuncRuntime::terminate>;
  o.remove = op<&RuncRuntime::remove>;
  o.inspect = op<&RuncRuntime::inspect>;
  o.list = op<&RuncRuntime::list>;
  o.logs = op<&RuncRuntime::logs>;
  o.cancel = op<&RuncRuntime::cancel>;
  o.image_pull = op<&RuncRuntime::imagePull>;
  o.image_resolve = op<&RuncRuntime::imageResolve>;
  o.image_load = op<&RuncRuntime::imageLoad>;
  o.image_list = op<&RuncRuntime::imageList>;
  o.image_remove = op<&RuncRuntime::imageRemove>;
  return o;
}();

const shoal_plugin_desc kDesc =
    shoal::sdk::describe<RuncRuntime>(SHOAL_KIND_RUNTIME, kName, kVersion, &kOps);

}  // namespace

SHOAL_PLUGIN(kDesc)
