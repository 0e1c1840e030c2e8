#include "task_spec.h"

#include <shoal/plugin.h>
#include <shoal/plugin.hpp>

#include <Poco/Dynamic/Var.h>
#include <Poco/Exception.h>
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/ParseHandler.h>
#include <Poco/JSON/Parser.h>
#include <Poco/JSON/Stringifier.h>

#include <arpa/inet.h>

#include <limits>
#include <sstream>
#include <typeinfo>

namespace shoal::runc {
namespace {

using Poco::Dynamic::Var;
using Poco::JSON::Array;
using Poco::JSON::Object;

// Reads typed members of one JSON object; every error names the field by its dotted path.
class Reader {
 public:
  Reader(const Object::Ptr& obj, std::string path, const std::string* taskId)
      : obj_(obj), path_(std::move(path)), taskId_(taskId) {}

  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    std::string where = "task document";
    if (taskId_ != nullptr && !taskId_->empty()) where += " of task " + *taskId_;
    throw sdk::Error(SHOAL_EINVAL, where + ": " + field(key) + " " + what);
  }

  std::string field(const std::string& key) const {
    return path_.empty() ? "\"" + key + "\"" : "\"" + path_ + "." + key + "\"";
  }

  std::string sub(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }

  // The member, or nullptr when it is absent or JSON null.
  const Var* get(const std::string& key) const {
    for (const auto& member : *obj_) {
      if (member.first == key) return member.second.isEmpty() ? nullptr : &member.second;
    }
    return nullptr;
  }

  std::string str(const std::string& key, bool required = false) const {
    const Var* v = get(key);
    if (v == nullptr) {
      if (required) fail(key, "is required");
      return "";
    }
    if (!v->isString()) fail(key, "must be a string");
    std::string s = v->extract<std::string>();
    if (s.find('\0') != std::string::npos) fail(key, "must not contain NUL");
    return s;
  }

  int64_t int64(const std::string& key) const {
    const Var* v = get(key);
    if (v == nullptr) return 0;
    return toInt(key, *v);
  }

  int64_t toInt(const std::string& key, const Var& v) const {
    if (!v.isInteger() || v.isBoolean()) fail(key, "must be an integer");
    try {
      return v.convert<Poco::Int64>();
    } catch (const Poco::Exception&) {
      fail(key, "is out of range");
    }
  }

  bool boolean(const std::string& key) const {
    const Var* v = get(key);
    if (v == nullptr) return false;
    if (!v->isBoolean()) fail(key, "must be true or false");
    return v->extract<bool>();
  }

  std::vector<std::string> strings(const std::string& key) const {
    std::vector<std::string> out;
    Array::Ptr arr = array(key);
    if (arr.isNull()) return out;
    for (std::size_t i = 0; i < arr->size(); ++i) {
      const Var& v = arr->get(static_cast<unsigned>(i));
      if (!v.isString()) fail(key, "must be an array of strings");
      std::string s = v.extract<std::string>();
      if (s.find('\0') != std::string::npos) fail(key, "must not contain NUL");
      out.push_back(std::move(s));
    }
    return out;
  }

  Array::Ptr array(const std::string& key) const {
    const Var* v = get(key);
    if (v == nullptr) return nullptr;
    if (v->type() != typeid(Array::Ptr)) fail(key, "must be an array");
    return v->extract<Array::Ptr>();
  }

  Object::Ptr object(const std::string& key, bool required = false) const {
    const Var* v = get(key);
    if (v == nullptr) {
      if (required) fail(key, "is required");
      return nullptr;
    }
    if (v->type() != typeid(Object::Ptr)) fail(key, "must be an object");
    return v->extract<Object::Ptr>();
  }

  // Element `i` of array member `key`, which must be an object.
  Object::Ptr element(const std::string& key, const Array::Ptr& arr, std::size_t i) const {
    const Var& v = arr->get(static_cast<unsigned>(i));
    if (v.type() != typeid(Object::Ptr)) fail(key, "must be an array of objects");
    return v.extract<Object::Ptr>();
  }

  Reader child(const Object::Ptr& obj, const std::string& key) const {
    return Reader(obj, sub(key), taskId_);
  }

 private:
  Object::Ptr obj_;
  std::string path_;
  const std::string* taskId_;
};

Mount parseMount(const Reader& m) {
  Mount mount;
  mount.type = m.str("Type");
  if (mount.type.empty()) mount.type = "volume";  // Docker's default
  if (mount.type != "bind" && mount.type != "volume" && mount.type != "tmpfs") {
    m.fail("Type", "must be \"bind\", \"volume\" or \"tmpfs\" (not \"" + mount.type + "\")");
  }
  mount.source = m.str("Source");
  mount.target = m.str("Target", true);
  if (mount.target.empty() || mount.target[0] != '/') m.fail("Target", "must be an absolute path");
  if (mount.type == "bind" && (mount.source.empty() || mount.source[0] != '/')) {
    m.fail("Source", "must be an absolute path for a bind mount");
  }
  mount.readOnly = m.boolean("ReadOnly");
  if (Object::Ptr bind = m.object("BindOptions")) {
    Reader b = m.child(bind, "BindOptions");
    mount.propagation = b.str("Propagation");
    static const char* const kModes[] = {"",        "private", "rprivate", "shared",
                                         "rshared", "slave",   "rslave"};
    bool known = false;
    for (const char* mode : kModes) known = known || mount.propagation == mode;
    if (!known) b.fail("Propagation", "is not a propagation mode (\"" + mount.propagation + "\")");
  }
  if (Object::Ptr tmpfs = m.object("TmpfsOptions")) {
    Reader t = m.child(tmpfs, "TmpfsOptions");
    mount.tmpfsSizeBytes = t.int64("SizeBytes");
    if (mount.tmpfsSizeBytes < 0) t.fail("SizeBytes", "must not be negative");
    int64_t mode = t.int64("Mode");
    if (mode < 0 || mode > 07777) t.fail("Mode", "must be a file mode (0..07777)");
    mount.tmpfsMode = static_cast<uint32_t>(mode);
  }
  return mount;
}

bool isIpv4(const std::string& text) {
  in_addr a{};
  return inet_pton(AF_INET, text.c_str(), &a) == 1;
}

// A word that can stand on a resolv.conf line: not empty, no blanks or control characters.
bool isResolvWord(const std::string& s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (static_cast<unsigned char>(c) <= ' ' || c == 0x7f) return false;
  }
  return true;
}

DnsConfig parseDns(const Reader& d) {
  DnsConfig dns;
  dns.nameservers = d.strings("nameservers");
  for (const std::string& ns : dns.nameservers) {
    if (!isIpv4(ns)) d.fail("nameservers", "has \"" + ns + "\", which is not an IPv4 address");
  }
  if (dns.nameservers.size() > kMaxNameservers) {
    d.fail("nameservers", "has " + std::to_string(dns.nameservers.size()) +
                              " entries; glibc reads at most " + std::to_string(kMaxNameservers));
  }
  dns.search = d.strings("search");
  for (const std::string& s : dns.search) {
    if (!isResolvWord(s)) d.fail("search", "has an empty entry or one with blanks (\"" + s + "\")");
  }
  dns.options = d.strings("options");
  for (const std::string& o : dns.options) {
    if (!isResolvWord(o)) {
      d.fail("options", "has an empty entry or one with blanks (\"" + o + "\")");
    }
  }
  return dns;
}

void parseResources(const Reader& spec, TaskSpec& t) {
  Object::Ptr resources = spec.object("resources");
  if (resources.isNull()) return;
  Reader r = spec.child(resources, "resources");
  if (Object::Ptr limits = r.object("Limits")) {
    Reader l = r.child(limits, "Limits");
    t.nanoCpus = l.int64("NanoCPUs");
    t.memoryLimitBytes = l.int64("MemoryBytes");
    t.pidsLimit = l.int64("Pids");
    if (t.nanoCpus < 0) l.fail("NanoCPUs", "must not be negative");
    if (t.memoryLimitBytes < 0) l.fail("MemoryBytes", "must not be negative");
    if (t.memoryLimitBytes > 0 && t.memoryLimitBytes < 6 * 1024 * 1024) {
      l.fail("MemoryBytes", "must be at least 6 MiB (Docker's minimum)");
    }
    if (t.pidsLimit < 0) l.fail("Pids", "must not be negative");
  }
  if (Object::Ptr reservations = r.object("Reservations")) {
    Reader v = r.child(reservations, "Reservations");
    t.memoryReservationBytes = v.int64("MemoryBytes");
    if (t.memoryReservationBytes < 0) v.fail("MemoryBytes", "must not be negative");
    v.int64("NanoCPUs");  // scheduling only; type-checked
    v.array("GenericResources");
  }
}

void parseSpec(const Reader& s, TaskSpec& t) {
  t.image = s.str("image", true);
  if (t.image.empty()) s.fail("image", "must not be empty");
  t.command = s.strings("command");
  t.args = s.strings("args");
  t.env = s.strings("env");
  for (const std::string& e : t.env) {
    if (e.empty() || e[0] == '=') s.fail("env", "has an entry with no name (\"" + e + "\")");
  }
  t.workdir = s.str("workdir");
  if (!t.workdir.empty() && t.workdir[0] != '/') s.fail("workdir", "must be an absolute path");
  t.user = s.str("user");
  t.hostname = s.str("hostname");
  if (t.hostname.size() > 64) s.fail("hostname", "is longer than 64 characters");
  t.stopSignal = s.str("stop_signal");
  t.stopGraceNs = s.int64("stop_grace_ns");
  t.readOnly = s.boolean("read_only");
  t.capAdd = s.strings("cap_add");
  t.capDrop = s.strings("cap_drop");
  t.init = s.boolean("init");
  t.tty = s.boolean("tty");
  if (Object::Ptr sysctls = s.object("sysctls")) {
    for (const auto& member : *sysctls) {
      if (!member.second.isString()) s.fail("sysctls", "must map names to strings");
      t.sysctls[member.first] = member.second.extract<std::string>();
    }
  }
  if (Array::Ptr ulimits = s.array("ulimits")) {
    for (std::size_t i = 0; i < ulimits->size(); ++i) {
      Reader u = s.child(s.element("ulimits", ulimits, i), "ulimits[" + std::to_string(i) + "]");
      Ulimit ulimit{u.str("name", true), u.int64("soft"), u.int64("hard")};
      if (ulimit.name.empty()) u.fail("name", "must not be empty");
      if (ulimit.soft < 0 || ulimit.hard < 0 || ulimit.soft > ulimit.hard) {
        u.fail("soft", "must be between 0 and \"hard\"");
      }
      t.ulimits.push_back(std::move(ulimit));
    }
  }
  if (const Var* hc = s.get("healthcheck")) {
    if (hc->type() != typeid(Object::Ptr)) s.fail("healthcheck", "must be an object");
    std::ostringstream text;
    Poco::JSON::Stringifier::condense(*hc, text);
    t.healthcheckJson = text.str();
  }
  if (Array::Ptr mounts = s.array("mounts")) {
    for (std::size_t i = 0; i < mounts->size(); ++i) {
      t.mounts.push_back(
          parseMount(s.child(s.element("mounts", mounts, i), "mounts[" + std::to_string(i) + "]")));
    }
  }
  parseResources(s, t);
}

}  // namespace

TaskSpec parseTaskDocument(std::string_view json) {
  Var parsed;
  try {
    Poco::JSON::ParseHandler::Ptr handler = new Poco::JSON::ParseHandler(true);
    Poco::JSON::Parser parser(handler);
    parsed = parser.parse(std::string(json));
  } catch (const Poco::Exception& e) {
    throw sdk::Error(SHOAL_EINVAL, "task document is not valid JSON: " + e.displayText());
  }
  if (parsed.type() != typeid(Object::Ptr)) {
    throw sdk::Error(SHOAL_EINVAL, "task document must be a JSON object");
  }
  TaskSpec t;
  Reader top(parsed.extract<Object::Ptr>(), "", &t.id);
  t.id = top.str("id", true);
  if (t.id.empty() || t.id.find('/') != std::string::npos || t.id == "." || t.id == "..") {
    top.fail("id", "must be a non-empty name without '/'");
  }
  if (top.get("schema") != nullptr && top.str("schema") != "shoal.task/v1") {
    top.fail("schema", "must be \"shoal.task/v1\" (not \"" + top.str("schema") + "\")");
  }
  t.serviceId = top.str("service_id");
  t.slot = top.int64("slot");
  t.nodeId = top.str("node_id");
  t.name = top.str("name");
  top.array("networks");
  t.netnsPath = top.str("netns");
  if (!t.netnsPath.empty() && t.netnsPath[0] != '/') top.fail("netns", "must be an absolute path");
  if (Object::Ptr dns = top.object("dns")) t.dns = parseDns(top.child(dns, "dns"));
  t.addresses = top.strings("addresses");
  for (const std::string& a : t.addresses) {
    if (!isIpv4(a)) top.fail("addresses", "has \"" + a + "\", which is not an IPv4 address");
  }
  if (Array::Ptr mounts = top.array("mounts")) {
    for (std::size_t i = 0; i < mounts->size(); ++i) {
      Reader m = top.child(top.element("mounts", mounts, i), "mounts[" + std::to_string(i) + "]");
      ExtraMount mount{m.str("source"), m.str("target", true), m.str("type"), m.strings("options")};
      if (mount.target.empty() || mount.target[0] != '/') {
        m.fail("target", "must be an absolute path");
      }
      t.extraMounts.push_back(std::move(mount));
    }
  }
  parseSpec(top.child(top.object("spec", true), "spec"), t);
  return t;
}

}  // namespace shoal::runc
