#include "kernel/plugin/plugin_host.h"

#include <dlfcn.h>
#include <elf.h>
#include <link.h>

#include <algorithm>
#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include <shoal/network.h>
#include <shoal/runtime.h>
#include <shoal/scheduler.h>
#include <shoal/secrets.h>
#include <shoal/storage.h>

#include "kernel/common/log.h"
#include "kernel/plugin/host_policy.h"

namespace shoal::plugin {
namespace {

std::atomic<const Clock*> g_clock{&SystemClock::instance()};

// ---- the host table -------------------------------------------------------------------------

void* hostAlloc(uint64_t size) { return std::malloc(size == 0 ? 1 : size); }
void hostFree(void* p) { std::free(p); }

void hostLog(shoal_instance* inst, int32_t level, shoal_str message) {
  log::Level lv = log::Level::kInfo;
  if (level <= SHOAL_LOG_ERROR) {
    lv = log::Level::kError;
  } else if (level == SHOAL_LOG_WARN) {
    lv = log::Level::kWarn;
  } else if (level == SHOAL_LOG_DEBUG) {
    lv = log::Level::kDebug;
  } else if (level >= SHOAL_LOG_TRACE) {
    lv = log::Level::kTrace;
  }
  std::string name = inst != nullptr ? inst->owner->info().name : "?";
  log::write(lv, "plugin", std::string_view(message.ptr ? message.ptr : "", message.len),
             {{"plugin", name}});
}

shoal_status hostFail(shoal_instance* inst, shoal_status code, const char* fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = std::vsnprintf(buf, sizeof buf, fmt != nullptr ? fmt : "(no message)", ap);
  va_end(ap);
  std::string message(buf, n < 0 ? 0 : std::min<std::size_t>(n, sizeof buf - 1));
  if (inst == nullptr || !inst->owner->recordFailure(message)) {
    // fail() outside one of the instance's calls has no call to attach to.
    log::warn("plugin", "host->fail called outside a call of this plugin",
              {{"plugin", inst != nullptr ? inst->owner->info().name : "?"}, {"error", message}});
  }
  return code;
}

std::string copyStr(shoal_str s) {
  return s.ptr == nullptr ? std::string() : std::string(s.ptr, s.len);
}

shoal_status hostPost(shoal_instance* inst, const shoal_event* event) {
  if (inst == nullptr || event == nullptr) return SHOAL_EINVAL;
  PluginInstance* self = inst->owner;
  if (self->closing()) return SHOAL_ECANCELED;
  // A newer plugin may send a bigger event; an older one must send at least ABI 1.0's.
  if (event->struct_size < offsetof(shoal_event, json) + sizeof(shoal_str)) return SHOAL_EINVAL;
  PluginEvent ev;
  ev.plugin = self->info().name;
  ev.kind = self->info().kind;
  ev.type = event->type;
  ev.op = event->op;
  ev.status = event->status;
  ev.subject = copyStr(event->subject);
  ev.json = copyStr(event->json);
  return self->events()->push(std::move(ev));
}

int64_t hostNowNs() { return g_clock.load()->nowNanos(); }
int64_t hostMonotonicNs() { return g_clock.load()->monotonicNanos(); }

const shoal_host kHostTable = {
    sizeof(shoal_host),
    SHOAL_ABI_MAJOR,
    SHOAL_ABI_MINOR,
    hostAlloc,
    hostFree,
    hostLog,
    hostFail,
    hostPost,
    hostNowNs,
    hostMonotonicNs,
    // ABI 1.1
    detail::hostPolicyOpen,
    detail::hostPolicyClose,
    detail::hostPolicyBind,
    detail::hostPolicyUpdate,
    detail::hostPolicyFilter,
    detail::hostPolicyScore,
    detail::hostPolicyExplain,
};

// ---- ops table checks -----------------------------------------------------------------------

// Whether a kind's ops table is at least ABI 1.0's (`minSize`, all of it by default) and all of
// those ops are set. Slots added by later minors may be absent (a smaller table) or null: the
// caller probes them.
template <class Ops>
std::string checkOpsTable(const void* raw, std::size_t minSize = sizeof(Ops)) {
  const auto* ops = static_cast<const Ops*>(raw);
  if (ops->struct_size < minSize) {
    return "ops table is too small (" + std::to_string(ops->struct_size) + " bytes; ABI " +
           std::to_string(SHOAL_ABI_MAJOR) + "." + std::to_string(SHOAL_ABI_MINOR) + " needs " +
           std::to_string(minSize) + ")";
  }
  // Every ABI 1.0 op after the header (struct_size, reserved) is a function pointer.
  const auto* slots = reinterpret_cast<void* const*>(reinterpret_cast<const char*>(ops) + 8);
  const std::size_t count = (minSize - 8) / sizeof(void*);
  for (std::size_t i = 0; i < count; ++i) {
    if (slots[i] == nullptr) {
      return "ops table entry " + std::to_string(i) +
             " is null (every ABI 1.0 op must be set; return SHOAL_ENOTSUP from ops you do "
             "not implement)";
    }
  }
  return "";
}

std::string checkOps(int32_t kind, const void* ops) {
  switch (kind) {
    case SHOAL_KIND_SCHEDULER:
      return checkOpsTable<shoal_scheduler_ops>(ops);
    case SHOAL_KIND_RUNTIME:
      return checkOpsTable<shoal_runtime_ops>(ops, SHOAL_RUNTIME_OPS_MIN_SIZE);
    case SHOAL_KIND_NETWORK:
      return checkOpsTable<shoal_network_ops>(ops);
    case SHOAL_KIND_SECRETS:
      return checkOpsTable<shoal_secrets_ops>(ops);
    case SHOAL_KIND_STORAGE:
      return checkOpsTable<shoal_storage_ops>(ops);
    default:
      return "unknown kind";
  }
}

bool validName(const char* name) {
  if (name == nullptr || *name == '\0' || std::strlen(name) > 64) return false;
  for (const char* p = name; *p; ++p) {
    if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_')) {
      return false;
    }
  }
  return true;
}

// The DT_NEEDED names of a loaded object.
std::vector<std::string> neededOf(const link_map* lm) {
  std::vector<std::string> out;
  const char* strtab = nullptr;
  for (const ElfW(Dyn)* d = lm->l_ld; d->d_tag != DT_NULL; ++d) {
    // glibc has relocated DT_STRTAB to an absolute address in the loaded image.
    if (d->d_tag == DT_STRTAB) strtab = reinterpret_cast<const char*>(d->d_un.d_ptr);
  }
  if (strtab == nullptr) return out;
  for (const ElfW(Dyn)* d = lm->l_ld; d->d_tag != DT_NULL; ++d) {
    if (d->d_tag == DT_NEEDED) out.emplace_back(strtab + d->d_un.d_val);
  }
  return out;
}

std::string abiString(unsigned major, unsigned minor) {
  return std::to_string(major) + "." + std::to_string(minor);
}

}  // namespace

PluginHost::PluginHost(const Clock& clock) { g_clock.store(&clock); }

PluginHost::~PluginHost() { shutdown(); }

const shoal_host* PluginHost::hostTable() { return &kHostTable; }

void PluginHost::setPolicySource(PolicySource source) { policies_.setSource(std::move(source)); }

void PluginHost::setPolicyLimits(const policy::Limits& limits) { policies_.setLimits(limits); }

void PluginHost::setPluginConfig(std::map<std::string, std::string> config) {
  std::lock_guard<std::mutex> lock(mu_);
  config_ = std::move(config);
}

void PluginHost::setDisabled(std::vector<std::string> names) {
  std::lock_guard<std::mutex> lock(mu_);
  disabled_ = std::move(names);
}

void PluginHost::setEventHandler(EventQueue::Handler handler) {
  events_.setHandler(std::move(handler));
}

void PluginHost::start() { events_.start(); }

void PluginHost::loadDirectories(const std::vector<std::string>& dirs) {
  namespace fs = std::filesystem;
  for (const auto& dir : dirs) {
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) {
      log::warn("plugin", "plugin directory does not exist", {{"dir", dir}});
      continue;
    }
    std::vector<std::string> files;
    for (const auto& entry : fs::directory_iterator(dir, ec)) {
      if (entry.path().extension() == ".so" && entry.is_regular_file(ec)) {
        files.push_back(entry.path().string());
      }
    }
    std::sort(files.begin(), files.end());
    for (const auto& f : files) loadFile(f);
  }
}

Status PluginHost::refuse(const std::string& path, std::string message) {
  log::error("plugin", "plugin refused", {{"file", path}, {"error", message}});
  std::lock_guard<std::mutex> lock(mu_);
  refusals_.push_back({path, message});
  return Status::failedPrecondition("plugin " + path + ": " + message);
}

Status PluginHost::checkEntryPoint(void* handle, const std::string& path, void* entry) const {
  link_map* own = nullptr;
  if (dlinfo(handle, RTLD_DI_LINKMAP, &own) != 0 || own == nullptr) {
    return Status::internal("cannot inspect the loaded object: " + std::string(dlerror()));
  }
  // dlsym also searches the object's dependencies: the symbol must be this file's own.
  Dl_info info{};
  link_map* where = nullptr;
  if (dladdr1(entry, &info, reinterpret_cast<void**>(&where), RTLD_DL_LINKMAP) == 0 ||
      where != own) {
    return Status::failedPrecondition(
        std::string("missing entry point: ") + SHOAL_PLUGIN_ENTRY +
        " is not defined in this file (the one visible comes from " +
        (info.dli_fname != nullptr ? info.dli_fname : "another object") + ")");
  }
  // A dependency that exports the entry point too makes it ambiguous which plugin this is.
  for (const auto& dep : neededOf(own)) {
    void* h = dlopen(dep.c_str(), RTLD_LAZY | RTLD_NOLOAD | RTLD_LOCAL);
    if (h == nullptr) continue;
    void* sym = dlsym(h, SHOAL_PLUGIN_ENTRY);
    dlclose(h);
    if (sym != nullptr && sym != entry) {
      Dl_info di{};
      dladdr(sym, &di);
      return Status::failedPrecondition(std::string("duplicate entry point: ") +
                                        SHOAL_PLUGIN_ENTRY +
                                        " is defined both in this file and in its dependency " +
                                        (di.dli_fname != nullptr ? di.dli_fname : dep) +
                                        "; a plugin shared object must export exactly one");
    }
  }
  (void)path;
  return Status::ok();
}

Status PluginHost::loadFile(const std::string& path) {
  dlerror();
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* err = dlerror();
    return refuse(path, std::string("cannot load: ") + (err != nullptr ? err : "unknown error"));
  }
  // From here on every refusal must dlclose.
  auto refuseAndClose = [&](std::string message) {
    dlclose(handle);
    return refuse(path, std::move(message));
  };

  void* entry = dlsym(handle, SHOAL_PLUGIN_ENTRY);
  if (entry == nullptr) {
    return refuseAndClose(std::string("missing entry point: the file does not export ") +
                          SHOAL_PLUGIN_ENTRY + " (build it with the SHOAL_PLUGIN macro)");
  }
  if (Status s = checkEntryPoint(handle, path, entry); !s) return refuseAndClose(s.message());

  const shoal_plugin_desc* desc = nullptr;
  try {
    desc = reinterpret_cast<shoal_plugin_describe_fn>(entry)();
  } catch (...) {
    return refuseAndClose(std::string(SHOAL_PLUGIN_ENTRY) + " threw an exception");
  }
  if (desc == nullptr) return refuseAndClose(std::string(SHOAL_PLUGIN_ENTRY) + " returned NULL");

  // struct_size, abi_major and abi_minor are the first 8 bytes of every ABI's descriptor.
  constexpr uint32_t kHeader = offsetof(shoal_plugin_desc, kind);
  if (desc->struct_size < kHeader) {
    return refuseAndClose("descriptor too small (" + std::to_string(desc->struct_size) +
                          " bytes): not a Shoal plugin descriptor");
  }
  const std::string ours = abiString(SHOAL_ABI_MAJOR, SHOAL_ABI_MINOR);
  const std::string theirs = abiString(desc->abi_major, desc->abi_minor);
  if (desc->abi_major != SHOAL_ABI_MAJOR) {
    return refuseAndClose("built for Shoal plugin ABI " + theirs + ", but this shoald speaks ABI " +
                          ours +
                          " (a different major version is incompatible; rebuild the "
                          "plugin against SDK " +
                          ours + ")");
  }
  if (desc->abi_minor > SHOAL_ABI_MINOR) {
    return refuseAndClose("built for Shoal plugin ABI " + theirs +
                          ", newer than this shoald's ABI " + ours +
                          " (upgrade shoald, or rebuild the plugin against SDK " + ours + ")");
  }
  if (desc->struct_size < SHOAL_PLUGIN_DESC_MIN_SIZE) {
    return refuseAndClose("descriptor too small: " + std::to_string(desc->struct_size) +
                          " bytes, but ABI " + theirs + " needs at least " +
                          std::to_string(SHOAL_PLUGIN_DESC_MIN_SIZE));
  }
  if (!isKnownKind(desc->kind)) {
    return refuseAndClose("unknown plugin kind " + std::to_string(desc->kind) + " (ABI " + ours +
                          " knows 1 scheduler, 2 runtime, 3 network, 4 secrets, "
                          "5 storage)");
  }
  if (!validName(desc->name)) {
    return refuseAndClose("invalid plugin name (want 1-64 characters of a-z, 0-9, '-', '_')");
  }
  if (desc->version == nullptr || *desc->version == '\0') {
    return refuseAndClose(std::string("plugin ") + desc->name + " has no version string");
  }
  if (desc->init == nullptr || desc->fini == nullptr || desc->ops == nullptr) {
    return refuseAndClose(std::string("plugin ") + desc->name +
                          " has no init, fini or ops (all three are required)");
  }
  if (std::string why = checkOps(desc->kind, desc->ops); !why.empty()) {
    return refuseAndClose(std::string("plugin ") + desc->name + ": " + why);
  }

  PluginInfo info;
  info.path = path;
  info.name = desc->name;
  info.version = desc->version;
  info.kind = static_cast<Kind>(desc->kind);
  info.abiMajor = desc->abi_major;
  info.abiMinor = desc->abi_minor;

  std::string config = "{}";
  std::string duplicateOf;
  bool disabled = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    disabled = std::find(disabled_.begin(), disabled_.end(), info.name) != disabled_.end();
    if (disabled) disabledSkipped_.push_back(info.name);
    for (const auto& inst : instances_) {
      if (inst->info().kind == info.kind && inst->info().name == info.name) {
        duplicateOf = inst->info().path;
      }
    }
    if (auto it = config_.find(info.name); it != config_.end()) config = it->second;
  }
  if (disabled) {
    log::info("plugin", "plugin disabled by configuration", {{"name", info.name}, {"file", path}});
    dlclose(handle);
    return Status::ok();
  }
  if (!duplicateOf.empty()) {
    return refuseAndClose("duplicate plugin " + std::string(kindName(info.kind)) + "/" + info.name +
                          ": already loaded from " + duplicateOf);
  }

  // The instance owns the handle from here on: its destructor dlcloses.
  auto inst = std::make_unique<PluginInstance>(info, handle, desc, &events_);
  inst->setPolicyBroker(&policies_);
  if (Status s = inst->init(&kHostTable, config); !s) {
    inst.reset();
    return refuse(path, "init failed: " + s.message());
  }
  log::info("plugin", "plugin loaded",
            {{"kind", std::string(kindName(info.kind))},
             {"name", info.name},
             {"version", info.version},
             {"abi", theirs},
             {"file", path}});
  std::lock_guard<std::mutex> lock(mu_);
  instances_.push_back(std::move(inst));
  return Status::ok();
}

Status PluginHost::checkRequired(const std::vector<std::string>& kinds) const {
  std::string missing;
  for (const auto& k : kinds) {
    auto kind = parseKind(k);
    if (!kind) return kind.status();
    if (ofKind(*kind).empty()) missing += (missing.empty() ? "" : ", ") + k;
  }
  if (missing.empty()) return Status::ok();
  return Status::failedPrecondition("no plugin loaded for required kind(s): " + missing +
                                    " (see plugins.dirs and plugins.required in shoald.yaml)");
}

std::vector<PluginInfo> PluginHost::list() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<PluginInfo> out;
  for (const auto& inst : instances_) out.push_back(inst->info());
  return out;
}

std::vector<Refusal> PluginHost::refusals() const {
  std::lock_guard<std::mutex> lock(mu_);
  return refusals_;
}

std::vector<std::string> PluginHost::disabledSkipped() const {
  std::lock_guard<std::mutex> lock(mu_);
  return disabledSkipped_;
}

PluginInstance* PluginHost::find(Kind kind, std::string_view name) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& inst : instances_) {
    if (inst->info().kind == kind && inst->info().name == name) return inst.get();
  }
  return nullptr;
}

std::vector<PluginInstance*> PluginHost::ofKind(Kind kind) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<PluginInstance*> out;
  for (const auto& inst : instances_) {
    if (inst->info().kind == kind) out.push_back(inst.get());
  }
  return out;
}

void PluginHost::shutdown() {
  std::vector<std::unique_ptr<PluginInstance>> doomed;
  {
    std::lock_guard<std::mutex> lock(mu_);
    doomed.swap(instances_);
  }
  for (auto& inst : doomed) inst->close();
  // Reverse load order, so a plugin loaded later (which may use an earlier one) goes first.
  while (!doomed.empty()) {
    log::debug("plugin", "unloading plugin", {{"name", doomed.back()->info().name}});
    doomed.pop_back();
  }
  events_.stop();
}

}  // namespace shoal::plugin
