#include "oci_spec.h"

#include "seccomp.h"

#include <shoal/plugin.h>
#include <shoal/plugin.hpp>

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <set>
#include <sstream>

#include "process.h"

namespace shoal::runc {

// Where Docker puts its init (docker-init) in a container started with --init.
constexpr char kInitPath[] = "/sbin/docker-init";

const std::vector<std::string> kDefaultCapabilities = {
    "CHOWN",   "DAC_OVERRIDE", "FSETID",           "FOWNER",
    "MKNOD",   "NET_RAW",      "SETGID",           "SETUID",
    "SETFCAP", "SETPCAP",      "NET_BIND_SERVICE", "SYS_CHROOT",
    "KILL",    "AUDIT_WRITE"};

namespace {

using Poco::JSON::Array;
using Poco::JSON::Object;

constexpr char kDefaultPath[] = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// Every capability Linux 6.x defines, in number order.
const char* const kAllCapabilities[] = {"CHOWN",
                                        "DAC_OVERRIDE",
                                        "DAC_READ_SEARCH",
                                        "FOWNER",
                                        "FSETID",
                                        "KILL",
                                        "SETGID",
                                        "SETUID",
                                        "SETPCAP",
                                        "LINUX_IMMUTABLE",
                                        "NET_BIND_SERVICE",
                                        "NET_BROADCAST",
                                        "NET_ADMIN",
                                        "NET_RAW",
                                        "IPC_LOCK",
                                        "IPC_OWNER",
                                        "SYS_MODULE",
                                        "SYS_RAWIO",
                                        "SYS_CHROOT",
                                        "SYS_PTRACE",
                                        "SYS_PACCT",
                                        "SYS_ADMIN",
                                        "SYS_BOOT",
                                        "SYS_NICE",
                                        "SYS_RESOURCE",
                                        "SYS_TIME",
                                        "SYS_TTY_CONFIG",
                                        "MKNOD",
                                        "LEASE",
                                        "AUDIT_WRITE",
                                        "AUDIT_CONTROL",
                                        "SETFCAP",
                                        "MAC_OVERRIDE",
                                        "MAC_ADMIN",
                                        "SYSLOG",
                                        "WAKE_ALARM",
                                        "BLOCK_SUSPEND",
                                        "AUDIT_READ",
                                        "PERFMON",
                                        "BPF",
                                        "CHECKPOINT_RESTORE"};

// Docker's oci.DefaultSpec paths.
const char* const kMaskedPaths[] = {"/proc/asound",
                                    "/proc/acpi",
                                    "/proc/kcore",
                                    "/proc/keys",
                                    "/proc/latency_stats",
                                    "/proc/timer_list",
                                    "/proc/timer_stats",
                                    "/proc/sched_debug",
                                    "/proc/scsi",
                                    "/sys/firmware",
                                    "/sys/devices/virtual/powercap"};
const char* const kReadonlyPaths[] = {"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                                      "/proc/sysrq-trigger"};

const char* const kRlimits[] = {"as",      "core",     "cpu",        "data",   "fsize", "locks",
                                "memlock", "msgqueue", "nice",       "nofile", "nproc", "rss",
                                "rtprio",  "rttime",   "sigpending", "stack"};

[[noreturn]] void invalid(const TaskSpec& task, const std::string& what) {
  throw sdk::Error(SHOAL_EINVAL, "task " + task.id + ": " + what);
}

std::string upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool parseUint32(const std::string& s, uint32_t& out) {
  if (s.empty() || s.size() > 10) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  if (v > 0xffffffffull) return false;
  out = static_cast<uint32_t>(v);
  return true;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string::size_type begin = 0;
  while (true) {
    auto end = s.find(sep, begin);
    out.push_back(s.substr(begin, end == std::string::npos ? std::string::npos : end - begin));
    if (end == std::string::npos) return out;
    begin = end + 1;
  }
}

std::vector<std::string> readLines(const std::string& path) {
  std::vector<std::string> lines;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line[0] != '#') lines.push_back(line);
  }
  return lines;
}

std::string envName(const std::string& entry) { return entry.substr(0, entry.find('=')); }

// Docker's ReplaceOrAppendEnvValues: "K=V" replaces K or is appended; a bare "K" removes K.
void replaceOrAppend(std::vector<std::string>& env, const std::vector<std::string>& overrides) {
  for (const std::string& entry : overrides) {
    const std::string name = envName(entry);
    const bool unset = entry.find('=') == std::string::npos;
    auto it = std::find_if(env.begin(), env.end(),
                           [&](const std::string& e) { return envName(e) == name; });
    if (unset) {
      if (it != env.end()) env.erase(it);
    } else if (it != env.end()) {
      *it = entry;
    } else {
      env.push_back(entry);
    }
  }
}

bool hasEnv(const std::vector<std::string>& env, const std::string& name) {
  return std::any_of(env.begin(), env.end(),
                     [&](const std::string& e) { return envName(e) == name; });
}

std::string normalizeCapability(const TaskSpec* task, const std::string& name) {
  std::string cap = upper(name);
  if (cap == "ALL") return cap;
  if (cap.rfind("CAP_", 0) == 0) cap = cap.substr(4);
  for (const char* known : kAllCapabilities) {
    if (cap == known) return cap;
  }
  const std::string message = "unknown capability \"" + name + "\"";
  if (task != nullptr) invalid(*task, message);
  throw sdk::Error(SHOAL_EINVAL, message);
}

Array::Ptr stringArray(const std::vector<std::string>& values) {
  Array::Ptr arr = new Array;
  for (const std::string& v : values) arr->add(v);
  return arr;
}

Object::Ptr mountObject(const std::string& destination, const std::string& type,
                        const std::string& source, const std::vector<std::string>& options) {
  Object::Ptr m = new Object(Poco::JSON_PRESERVE_KEY_ORDER);
  m->set("destination", destination);
  m->set("type", type);
  m->set("source", source);
  m->set("options", stringArray(options));
  return m;
}

std::string cleanPath(const std::string& path) {
  std::vector<std::string> parts;
  for (const std::string& c : split(path, '/')) {
    if (c.empty() || c == ".") continue;
    if (c == "..") {
      if (!parts.empty()) parts.pop_back();
      continue;
    }
    parts.push_back(c);
  }
  std::string out;
  for (const std::string& c : parts) out += "/" + c;
  return out.empty() ? "/" : out;
}

std::size_t depth(const std::string& path) {
  return static_cast<std::size_t>(std::count(path.begin(), path.end(), '/'));
}

struct UserMount {
  std::string destination;
  Object::Ptr json;
};

// The task's own mounts (spec.mounts and the plugins' mounts), as OCI mount objects.
std::vector<UserMount> userMounts(const TaskSpec& task) {
  std::vector<UserMount> out;
  std::set<std::string> seen;
  auto add = [&](const std::string& target, Object::Ptr json) {
    const std::string dest = cleanPath(target);
    if (dest == "/") invalid(task, "a mount cannot replace the root filesystem");
    if (!seen.insert(dest).second) invalid(task, "two mounts have the target " + dest);
    json->set("destination", dest);
    out.push_back({dest, json});
  };
  std::set<std::string> provided;
  for (const ExtraMount& m : task.extraMounts) provided.insert(cleanPath(m.target));
  for (const Mount& m : task.mounts) {
    if (m.type == "bind") {
      std::vector<std::string> options = {"rbind",
                                          m.propagation.empty() ? "rprivate" : m.propagation};
      if (m.readOnly) options.push_back("ro");
      add(m.target, mountObject(m.target, "bind", m.source, options));
    } else if (m.type == "tmpfs") {
      std::vector<std::string> options = {"nosuid", "nodev", "noexec"};
      if (m.readOnly) options.push_back("ro");
      if (m.tmpfsSizeBytes > 0) options.push_back("size=" + std::to_string(m.tmpfsSizeBytes));
      if (m.tmpfsMode != 0) {
        char mode[24];
        std::snprintf(mode, sizeof mode, "mode=%o", m.tmpfsMode);
        options.push_back(mode);
      }
      add(m.target, mountObject(m.target, "tmpfs", "tmpfs", options));
    } else if (provided.count(cleanPath(m.target)) == 0) {
      // A named volume is the storage plugin's: it arrives as a top-level mount.
      invalid(task, "the volume mount at " + m.target + " (\"" + m.source +
                        "\") has no storage plugin mount");
    }
  }
  for (const ExtraMount& m : task.extraMounts) {
    const std::string type = m.type.empty() ? "bind" : m.type;
    std::vector<std::string> options = m.options;
    if (options.empty() && type == "bind") options = {"rbind", "rprivate"};
    add(m.target, mountObject(m.target, type, m.source, options));
  }
  // Parents before children, as Docker sorts them; otherwise a parent would hide its child.
  std::stable_sort(out.begin(), out.end(), [](const UserMount& a, const UserMount& b) {
    return depth(a.destination) < depth(b.destination);
  });
  return out;
}

Array::Ptr defaultMounts(const std::set<std::string>& replaced) {
  struct Default {
    const char* destination;
    const char* type;
    const char* source;
    std::vector<std::string> options;
  };
  static const std::vector<Default> kMounts = {
      {"/proc", "proc", "proc", {"nosuid", "noexec", "nodev"}},
      {"/dev", "tmpfs", "tmpfs", {"nosuid", "strictatime", "mode=755", "size=65536k"}},
      {"/dev/pts",
       "devpts",
       "devpts",
       {"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
      {"/sys", "sysfs", "sysfs", {"nosuid", "noexec", "nodev", "ro"}},
      {"/sys/fs/cgroup", "cgroup", "cgroup", {"ro", "nosuid", "noexec", "nodev"}},
      {"/dev/mqueue", "mqueue", "mqueue", {"nosuid", "noexec", "nodev"}},
      {"/dev/shm", "tmpfs", "shm", {"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
  };
  Array::Ptr mounts = new Array;
  for (const Default& d : kMounts) {
    if (replaced.count(d.destination) != 0) continue;
    mounts->add(mountObject(d.destination, d.type, d.source, d.options));
  }
  return mounts;
}

Object::Ptr device(bool allow, const char* type, int64_t major, int64_t minor, const char* access) {
  Object::Ptr d = new Object(Poco::JSON_PRESERVE_KEY_ORDER);
  d->set("allow", allow);
  if (type != nullptr) d->set("type", std::string(type));
  if (major >= 0) d->set("major", major);
  if (minor >= 0) d->set("minor", minor);
  d->set("access", std::string(access));
  return d;
}

// Docker's default device cgroup rules.
Array::Ptr devices() {
  Array::Ptr arr = new Array;
  arr->add(device(false, nullptr, -1, -1, "rwm"));
  arr->add(device(true, "c", -1, -1, "m"));
  arr->add(device(true, "b", -1, -1, "m"));
  arr->add(device(true, "c", 1, 3, "rwm"));     // null
  arr->add(device(true, "c", 1, 8, "rwm"));     // random
  arr->add(device(true, "c", 1, 7, "rwm"));     // full
  arr->add(device(true, "c", 5, 0, "rwm"));     // tty
  arr->add(device(true, "c", 1, 5, "rwm"));     // zero
  arr->add(device(true, "c", 1, 9, "rwm"));     // urandom
  arr->add(device(true, "c", 136, -1, "rwm"));  // pts
  arr->add(device(true, "c", 5, 2, "rwm"));     // ptmx
  arr->add(device(true, "c", 5, 1, "rwm"));     // console
  arr->add(device(true, "c", 10, 200, "rwm"));  // net/tun
  return arr;
}

struct PasswdEntry {
  std::string name;
  uint32_t uid = 0;
  uint32_t gid = 0;
  std::string home;
};

struct GroupEntry {
  std::string name;
  uint32_t gid = 0;
  std::vector<std::string> members;
};

std::vector<PasswdEntry> readPasswd(const std::string& path) {
  std::vector<PasswdEntry> out;
  for (const std::string& line : readLines(path)) {
    std::vector<std::string> f = split(line, ':');
    PasswdEntry e;
    if (f.size() < 4 || !parseUint32(f[2], e.uid) || !parseUint32(f[3], e.gid)) continue;
    e.name = f[0];
    if (f.size() > 5) e.home = f[5];
    out.push_back(std::move(e));
  }
  return out;
}

std::vector<GroupEntry> readGroups(const std::string& path) {
  std::vector<GroupEntry> out;
  for (const std::string& line : readLines(path)) {
    std::vector<std::string> f = split(line, ':');
    GroupEntry e;
    if (f.size() < 3 || !parseUint32(f[2], e.gid)) continue;
    e.name = f[0];
    if (f.size() > 3 && !f[3].empty()) e.members = split(f[3], ',');
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace

std::vector<std::string> processArgs(const TaskSpec& task, const ImageDefaults& image) {
  std::vector<std::string> args = task.command.empty() ? image.entrypoint : task.command;
  const std::vector<std::string>& cmd =
      !task.args.empty() ? task.args : (task.command.empty() ? image.cmd : task.args);
  args.insert(args.end(), cmd.begin(), cmd.end());
  if (args.empty() || args[0].empty()) {
    invalid(task, "no command specified (neither the task nor image " + task.image +
                      " gives an entrypoint or cmd)");
  }
  return args;
}

std::vector<std::string> processEnv(const TaskSpec& task, const ImageDefaults& image,
                                    const std::string& hostname, const std::string& home) {
  std::vector<std::string> merged = image.env;
  replaceOrAppend(merged, task.env);
  std::vector<std::string> env;
  if (!hasEnv(merged, "PATH")) env.push_back(kDefaultPath);
  if (task.tty) env.push_back("TERM=xterm");  // Docker's, for a terminal; the image's wins
  env.push_back("HOSTNAME=" + hostname);
  replaceOrAppend(env, merged);
  if (!home.empty() && !hasEnv(env, "HOME")) env.push_back("HOME=" + home);
  return env;
}

std::vector<std::string> capabilities(const std::vector<std::string>& capAdd,
                                      const std::vector<std::string>& capDrop) {
  std::set<std::string> add, drop;
  for (const std::string& c : capAdd) add.insert(normalizeCapability(nullptr, c));
  for (const std::string& c : capDrop) drop.insert(normalizeCapability(nullptr, c));
  std::set<std::string> caps;
  if (add.count("ALL") != 0) {
    for (const char* c : kAllCapabilities) {
      if (drop.count(c) == 0) caps.insert(c);
    }
  } else if (drop.count("ALL") != 0) {
    caps = add;
  } else {
    for (const std::string& c : kDefaultCapabilities) {
      if (drop.count(c) == 0) caps.insert(c);
    }
    caps.insert(add.begin(), add.end());
  }
  std::vector<std::string> out;
  for (const std::string& c : caps) out.push_back("CAP_" + c);
  return out;
}

std::string resolveInRoot(const std::string& rootfsPath, const std::string& path) {
  std::string root = rootfsPath;
  while (root.size() > 1 && root.back() == '/') root.pop_back();
  std::deque<std::string> pending;
  for (const std::string& c : split(path, '/')) pending.push_back(c);
  std::vector<std::string> resolved;
  auto joined = [&] {
    std::string out = root;
    for (const std::string& c : resolved) out += "/" + c;
    return out;
  };
  int links = 0;
  while (!pending.empty()) {
    std::string c = pending.front();
    pending.pop_front();
    if (c.empty() || c == ".") continue;
    if (c == "..") {
      if (!resolved.empty()) resolved.pop_back();
      continue;
    }
    const std::string candidate = joined() + "/" + c;
    struct stat st {};
    if (lstat(candidate.c_str(), &st) == 0 && S_ISLNK(st.st_mode) && ++links <= 255) {
      std::string target(static_cast<std::size_t>(st.st_size) + 256, '\0');
      ssize_t n = readlink(candidate.c_str(), target.data(), target.size());
      if (n >= 0) {
        target.resize(static_cast<std::size_t>(n));
        if (!target.empty() && target[0] == '/') resolved.clear();
        std::vector<std::string> parts = split(target, '/');
        pending.insert(pending.begin(), parts.begin(), parts.end());
        continue;
      }
    }
    resolved.push_back(c);
  }
  return joined();
}

ResolvedUser resolveUser(const std::string& user, const std::string& rootfsPath) {
  const auto colon = user.find(':');
  const std::string userArg = user.substr(0, colon);
  const std::string groupArg = colon == std::string::npos ? "" : user.substr(colon + 1);
  ResolvedUser out;
  const std::vector<PasswdEntry> passwd = readPasswd(resolveInRoot(rootfsPath, "/etc/passwd"));
  uint32_t numeric = 0;
  const bool userNumeric = parseUint32(userArg, numeric);
  const PasswdEntry* matched = nullptr;
  for (const PasswdEntry& e : passwd) {
    if (userArg.empty() ? e.uid == 0 : (e.name == userArg || (userNumeric && e.uid == numeric))) {
      matched = &e;
      break;
    }
  }
  if (matched != nullptr) {
    out.uid = matched->uid;
    out.gid = matched->gid;
    out.home = matched->home;
  } else if (userArg.empty()) {
    out.uid = 0;  // root, with no passwd file
  } else if (userNumeric) {
    out.uid = numeric;
  } else {
    throw sdk::Error(SHOAL_EINVAL,
                     "unable to find user " + userArg + ": no matching entries in passwd file");
  }
  if (!groupArg.empty() || matched != nullptr) {
    const std::vector<GroupEntry> groups = readGroups(resolveInRoot(rootfsPath, "/etc/group"));
    if (!groupArg.empty()) {
      uint32_t gid = 0;
      const bool groupNumeric = parseUint32(groupArg, gid);
      auto it = std::find_if(groups.begin(), groups.end(), [&](const GroupEntry& g) {
        return g.name == groupArg || (groupNumeric && g.gid == gid);
      });
      if (it != groups.end()) {
        out.gid = it->gid;
      } else if (groupNumeric) {
        out.gid = gid;
      } else {
        throw sdk::Error(SHOAL_EINVAL, "unable to find group " + groupArg +
                                           ": no matching entries in group file");
      }
    } else {
      for (const GroupEntry& g : groups) {
        if (std::find(g.members.begin(), g.members.end(), matched->name) != g.members.end() &&
            g.gid != out.gid &&
            std::find(out.additionalGids.begin(), out.additionalGids.end(), g.gid) ==
                out.additionalGids.end()) {
          out.additionalGids.push_back(g.gid);
        }
      }
    }
  }
  return out;
}

int parseSignal(std::string_view name) {
  if (name.empty()) return SIGTERM;
  std::string s = upper(std::string(name));
  uint32_t number = 0;
  if (parseUint32(s, number)) return number > 0 && number < 65 ? static_cast<int>(number) : 0;
  if (s.rfind("SIG", 0) == 0) s = s.substr(3);
  static const std::pair<const char*, int> kSignals[] = {
      {"HUP", SIGHUP},       {"INT", SIGINT},   {"QUIT", SIGQUIT},     {"ILL", SIGILL},
      {"TRAP", SIGTRAP},     {"ABRT", SIGABRT}, {"IOT", SIGIOT},       {"BUS", SIGBUS},
      {"FPE", SIGFPE},       {"KILL", SIGKILL}, {"USR1", SIGUSR1},     {"SEGV", SIGSEGV},
      {"USR2", SIGUSR2},     {"PIPE", SIGPIPE}, {"ALRM", SIGALRM},     {"TERM", SIGTERM},
      {"STKFLT", SIGSTKFLT}, {"CHLD", SIGCHLD}, {"CONT", SIGCONT},     {"STOP", SIGSTOP},
      {"TSTP", SIGTSTP},     {"TTIN", SIGTTIN}, {"TTOU", SIGTTOU},     {"URG", SIGURG},
      {"XCPU", SIGXCPU},     {"XFSZ", SIGXFSZ}, {"VTALRM", SIGVTALRM}, {"PROF", SIGPROF},
      {"WINCH", SIGWINCH},   {"IO", SIGIO},     {"POLL", SIGPOLL},     {"PWR", SIGPWR},
      {"SYS", SIGSYS}};
  for (const auto& [n, sig] : kSignals) {
    if (s == n) return sig;
  }
  // Real-time signals: RTMIN, RTMIN+n, RTMAX-n.
  if (s == "RTMIN") return SIGRTMIN;
  if (s == "RTMAX") return SIGRTMAX;
  uint32_t offset = 0;
  if (s.rfind("RTMIN+", 0) == 0 && parseUint32(s.substr(6), offset) &&
      SIGRTMIN + static_cast<int>(offset) <= SIGRTMAX) {
    return SIGRTMIN + static_cast<int>(offset);
  }
  if (s.rfind("RTMAX-", 0) == 0 && parseUint32(s.substr(6), offset) &&
      SIGRTMAX - static_cast<int>(offset) >= SIGRTMIN) {
    return SIGRTMAX - static_cast<int>(offset);
  }
  return 0;
}

int stopSignal(const TaskSpec& task, const ImageDefaults& image) {
  const std::string& name = !task.stopSignal.empty() ? task.stopSignal : image.stopSignal;
  const int sig = parseSignal(name);
  if (sig == 0) invalid(task, "stop signal \"" + name + "\" is not a signal");
  return sig;
}

std::string containerHostname(const TaskSpec& task) {
  return !task.hostname.empty() ? task.hostname : task.id.substr(0, 12);
}

std::vector<NetworkFile> networkFiles(const TaskSpec& task) {
  if (!task.dns) return {};
  const std::string hostname = containerHostname(task);
  for (char c : hostname) {
    if (static_cast<unsigned char>(c) <= ' ' || c == 0x7f) {
      invalid(task, "the hostname \"" + hostname +
                        "\" cannot stand in /etc/hosts (it has blanks or control characters)");
    }
  }
  std::string resolv;
  for (const std::string& ns : task.dns->nameservers) resolv += "nameserver " + ns + "\n";
  auto line = [&](const char* key, const std::vector<std::string>& words) {
    if (words.empty()) return;
    resolv += key;
    for (const std::string& w : words) resolv += " " + w;
    resolv += "\n";
  };
  line("search", task.dns->search);
  line("options", task.dns->options);
  std::string hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";
  if (!task.addresses.empty()) hosts += task.addresses.front() + "\t" + hostname + "\n";
  return {{"resolv.conf", "/etc/resolv.conf", resolv},
          {"hosts", "/etc/hosts", hosts},
          {"hostname", "/etc/hostname", hostname + "\n"}};
}

void writeNetworkFiles(const TaskSpec& task, const std::string& dir) {
  for (const NetworkFile& f : networkFiles(task)) {
    const std::string path = dir + "/" + f.name;
    if (!writeFileAtomic(path, f.content)) {
      throw sdk::Error(SHOAL_EIO,
                       "task " + task.id + ": cannot write " + path + ": " + std::strerror(errno));
    }
  }
}

bool hostLimitsSwap() {
  if (access("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes", F_OK) == 0) return true;
  if (access("/sys/fs/cgroup/cgroup.controllers", F_OK) != 0) return false;
  // cgroup v2: the root has no memory.swap.max, and where this process or the containers'
  // parent sit may be the root or not exist yet; swap accounting is the kernel's, so any
  // cgroup under the root that has the memory controller tells.
  DIR* d = opendir("/sys/fs/cgroup");
  if (d == nullptr) return false;
  bool found = false;
  while (const dirent* e = readdir(d)) {
    const std::string name = e->d_name;
    if (name == "." || name == ".." || e->d_type != DT_DIR) continue;
    if (access(("/sys/fs/cgroup/" + name + "/memory.swap.max").c_str(), F_OK) == 0) {
      found = true;
      break;
    }
  }
  closedir(d);
  return found;
}

std::string buildOciConfig(const TaskSpec& task, const ImageDefaults& image,
                           const std::string& rootfsPath, const std::string& cgroupsPath,
                           const std::string& initBinary, const std::string& networkFilesDir,
                           bool seccomp) {
  if (rootfsPath.empty() || rootfsPath[0] != '/') {
    invalid(task, "the rootfs path must be absolute (\"" + rootfsPath + "\")");
  }
  if (task.init && (initBinary.empty() || initBinary[0] != '/')) {
    invalid(task,
            "\"init\" needs an init binary on this node (Debian's tini: "
            "/usr/bin/tini-static), and there is none");
  }
  if (task.dns && (networkFilesDir.empty() || networkFilesDir[0] != '/')) {
    invalid(task, "\"dns\" needs an absolute directory for the network files (\"" +
                      networkFilesDir + "\")");
  }
  const std::string hostname = containerHostname(task);

  ResolvedUser user;
  try {
    user = resolveUser(!task.user.empty() ? task.user : image.user, rootfsPath);
  } catch (const sdk::Error& e) {
    invalid(task, e.what());
  }

  Object::Ptr process = new Object(Poco::JSON_PRESERVE_KEY_ORDER);
  // With a terminal, runc hands the pty's master to the shim through --console-socket.
  process->set("terminal", task.tty);
  Object::Ptr u = new Object(Poco::JSON_PRESERVE_KEY_ORDER);
  u->set("uid", user.uid);
  u->set("gid", user.gid);
  if (!user.additionalGids.empty()) {
    Array::Ptr gids = new Array;
    for (uint32_t g : user.additionalGids) gids->add(g);
    u->set("additionalGids", gids);
  }
  process->set("user", u);
  std::vector<std::string> args = processArgs(task, image);
  if (task.init) {
    // Docker's --init: a small init as PID 1 reaps zombies and forwards signals to the command.
    args.insert(args.begin(), {kInitPath, "--"});
  }
  process->set("args", stringArray(args));
  process->set("env", stringArray(processEnv(task, image, hostname, user.home)));
  std::string cwd = !task.workdir.empty() ? task.workdir : image.workingDir;
  if (cwd.empty()) cwd = "/";
  if (cwd[0] != '/') invalid(task, "the working directory must be absolute (\"" + cwd + "\")");
  process->set("cwd", cwd);
  std::vector<std::string> capAdd, capDrop;
  for (const std::string& c : task.capAdd) capAdd.push_back(normalizeCapability(&task, c));
  for (const std::string& c : task.capDrop) capDrop.push_back(normalizeCapability(&task, c));
  const std::vector<std::string> capList = capabilities(capAdd, capDrop);
  Array::Ptr caps = stringArray(capList);
  Object::Ptr capObj = new Object(Poco::JSON_PRESERVE_KEY_ORDER);
  capObj->set("bounding", caps);
  capObj->set("effective", caps);
  capObj->set("permitted", caps);
  process->set("capabilities", capObj);
  Array::Ptr rlimits = new Array;
  std::set<std::string> seenLimits;
  for (const Ulimit& l : task.ulimits) {
    const std::string name = lower(l.name);
    if (std::none_of(std::begin(kRlimits), std::end(kRlimits),
                     [&](const char* k) { return name == k; })) {
      invalid(task, "unknown ulimit \"" + l.name + "\"");
    }
    if (!seenLimits.insert(name).second) invalid(task, "ulimit \"" + l.name + "\" given twice");
    Object::Ptr r = new Object(Poco::JSON_PRESERVE_KEY_ORDER);
    r->set("type", "RLIMIT_" + upper(name));
    r->set("hard", static_cast<uint64_t>(l.hard));
    r->set("soft", static_cast<uint64_t>(l.soft));
    rlimits->add(r);
  }
  if (rlimits->size() > 0) process->set("rlimits", rlimits);
  process->set("noNewPrivileges", false);

  Object::Ptr root = new Object(Poco::JSON_PRESERVE_KEY_ORDER);
  root->set("path", rootfsPath);
  root->set("readonly", task.readOnly);

  const std::vector<UserMount> own = userMounts(task);
  std::set<std::string> replaced;
  for (const UserMount& m : own) replaced.insert(m.destination);
  Array::Ptr mounts = defaultMounts(replaced);
  for (const UserMount& m : own) mounts->add(m.json);
  for (const NetworkFile& f : networkFiles(task)) {
    if (replaced.count(f.target) != 0) continue;  // the task's own file wins, as in Docker
    std::vector<std::string> options = {"rbind", "rprivate"};
    if (task.readOnly) options.push_back("ro");
    mounts->add(mountObject(f.target, "bind", networkFilesDir + "/" + f.name, options));
  }
  if (task.init) {
    mounts->add(mountObject(kInitPath, "bind", initBinary, {"bind", "ro", "nosuid", "nodev"}));
  }

  Object::Ptr linux = new Object(Poco::JSON_PRESERVE_KEY_ORDER);
  if (!task.sysctls.empty()) {
    Object::Ptr sysctl = new Object(Poco::JSON_PRESERVE_KEY_ORDER);
    for (const auto& [k, v] : task.sysctls) sysctl->set(k, v);
    linux->set("sysctl", sysctl);
  }
  Object::Ptr resources = new Object(Poco::JSON_PRESERVE_KEY_ORDER);
  resources->set("devices", devices());
  if (task.memoryLimitBytes > 0 || task.memoryReservationBytes > 0) {
    Object::Ptr memory = new Object(Poco::JSON_PRESERVE_KEY_ORDER);
    if (task.memoryLimitBytes > 0) memory->set("limit", task.memoryLimitBytes);
    if (task.memoryLimitBytes > 0 && task.memorySwapBytes >= task.memoryLimitBytes) {
      memory->set("swap", task.memorySwapBytes);
    }
    if (task.memoryReservationBytes > 0) memory->set("reservation", task.memoryReservationBytes);
    resources->set("memory", memory);
  }
  if (task.nanoCpus > 0) {
    constexpr int64_t kPeriod = 100000;  // microseconds, Docker's
    Object::Ptr cpu = new Object(Poco::JSON_PRESERVE_KEY_ORDER);
    // Docker: quota = NanoCPUs * period / 1e9, at least 1 ms (the kernel's minimum).
    cpu->set("quota", std::max<int64_t>(1000, task.nanoCpus / 10000));
    cpu->set("period", static_cast<uint64_t>(kPeriod));
    resources->set("cpu", cpu);
  }
  if (task.pidsLimit > 0) {
    Object::Ptr pids = new Object(Poco::JSON_PRESERVE_KEY_ORDER);
    pids->set("limit", task.pidsLimit);
    resources->set("pids", pids);
  }
  linux->set("resources", resources);
  linux->set("cgroupsPath", cgroupsPath);
  if (seccomp) linux->set("seccomp", defaultSeccomp(capList));
  Array::Ptr namespaces = new Array;
  for (const char* type : {"pid", "ipc", "uts", "mount", "network"}) {
    Object::Ptr ns = new Object(Poco::JSON_PRESERVE_KEY_ORDER);
    ns->set("type", std::string(type));
    if (std::string(type) == "network" && !task.netnsPath.empty()) {
      ns->set("path", task.netnsPath);
    }
    namespaces->add(ns);
  }
  linux->set("namespaces", namespaces);
  Array::Ptr masked = new Array;
  for (const char* p : kMaskedPaths) masked->add(std::string(p));
  linux->set("maskedPaths", masked);
  Array::Ptr readonly = new Array;
  for (const char* p : kReadonlyPaths) readonly->add(std::string(p));
  linux->set("readonlyPaths", readonly);

  Object config(Poco::JSON_PRESERVE_KEY_ORDER);
  config.set("ociVersion", std::string("1.0.2"));
  config.set("process", process);
  config.set("root", root);
  config.set("hostname", hostname);
  config.set("mounts", mounts);
  config.set("linux", linux);
  std::ostringstream text;
  config.stringify(text, 2);
  return text.str();
}

}  // namespace shoal::runc
