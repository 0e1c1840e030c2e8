#include "dataplane/state_file.hpp"

#include <shoal/plugin.h>
#include <shoal/plugin.hpp>

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <sstream>

#include "dataplane/host_ports.hpp"

namespace shoal::overlay::dataplane {
namespace {

constexpr char kSchema[] = "shoal.overlay-task/v1";

[[noreturn]] void ioError(const std::string& what, const std::string& path) {
  throw sdk::Error(SHOAL_EIO, what + " " + path + ": " + std::strerror(errno));
}

}  // namespace

std::string toJson(const TaskState& s) {
  // The file is the attach document this task was built from (so it parses with the same
  // checks), plus what only the dataplane knows.
  Poco::JSON::Object doc(Poco::JSON_PRESERVE_KEY_ORDER);
  doc.set("schema", std::string("shoal.attach/v1"));
  doc.set("state_schema", std::string(kSchema));
  doc.set("task_id", s.taskId);
  doc.set("netns", s.netns);
  doc.set("node_addr", formatIpv4(s.nodeAddr));
  Poco::JSON::Array endpoints;
  Poco::JSON::Array networks;
  for (std::size_t i = 0; i < s.endpoints.size(); ++i) {
    const EndpointSpec& e = s.endpoints[i];
    Poco::JSON::Object ep(Poco::JSON_PRESERVE_KEY_ORDER);
    ep.set("network_id", e.networkId);
    ep.set("address", e.address.str());
    ep.set("mac", e.mac.str());
    endpoints.add(ep);
    const NetworkSpec& n = s.networks.at(i);
    Poco::JSON::Object net(Poco::JSON_PRESERVE_KEY_ORDER);
    net.set("id", n.id);
    net.set("name", n.name);
    net.set("subnet", n.subnet.str());
    net.set("gateway", formatIpv4(n.gateway));
    net.set("vni", static_cast<Poco::Int64>(n.vni));
    if (n.encrypted) {
      Poco::JSON::Object options;
      options.set("encrypted", std::string());
      net.set("options", options);
    }
    networks.add(net);
  }
  doc.set("endpoints", endpoints);
  doc.set("networks", networks);
  if (!s.hostPorts.empty()) {
    Poco::JSON::Array ports;
    for (const HostPort& p : s.hostPorts) {
      Poco::JSON::Object port(Poco::JSON_PRESERVE_KEY_ORDER);
      port.set("protocol", p.protocol);
      port.set("published", static_cast<int>(p.published));
      port.set("target", static_cast<int>(p.target));
      ports.add(port);
    }
    doc.set("host_ports", ports);
  }
  if (s.hostSlot >= 0) doc.set("host_slot", s.hostSlot);
  std::ostringstream out;
  doc.stringify(out);
  return out.str();
}

TaskState taskStateFromJson(std::string_view taskId, std::string_view json) {
  AttachRequest req = parseAttach(taskId, json);
  TaskState s;
  s.taskId = req.taskId;
  s.nodeAddr = req.nodeAddr;
  s.endpoints = std::move(req.endpoints);
  s.networks = std::move(req.networks);
  s.hostPorts = std::move(req.hostPorts);
  // parseAttach has checked the document; read the dataplane's own members on top.
  Poco::JSON::Parser parser;
  Poco::JSON::Object::Ptr obj = parser.parse(std::string(json)).extract<Poco::JSON::Object::Ptr>();
  if (obj->optValue<std::string>("state_schema", "") != kSchema || !obj->has("netns") ||
      !obj->get("netns").isString()) {
    throw sdk::Error(SHOAL_EINVAL, "state of task " + s.taskId + ": not a " + kSchema +
                                       " document (state_schema and netns are required)");
  }
  s.netns = obj->getValue<std::string>("netns");
  if (obj->has("host_slot")) {
    const Poco::Dynamic::Var& v = obj->get("host_slot");
    if (!v.isInteger() || v.isBoolean() || v.convert<Poco::Int64>() < 0 ||
        v.convert<Poco::Int64>() >= kHostSlots) {
      throw sdk::Error(SHOAL_EINVAL, "state of task " + s.taskId +
                                         ": host_slot must be from 0 to " +
                                         std::to_string(kHostSlots - 1));
    }
    s.hostSlot = static_cast<int>(v.convert<Poco::Int64>());
  }
  if (!s.hostPorts.empty() && s.hostSlot < 0) {
    throw sdk::Error(SHOAL_EINVAL, "state of task " + s.taskId + ": host_ports without host_slot");
  }
  return s;
}

void writeFileAtomic(const std::string& path, const std::string& content) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) ioError("cannot create", tmp);
  std::size_t done = 0;
  while (done < content.size()) {
    const ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int saved = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      errno = saved;
      ioError("cannot write", tmp);
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    const int saved = errno;
    ::unlink(tmp.c_str());
    errno = saved;
    ioError("cannot flush", tmp);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int saved = errno;
    ::unlink(tmp.c_str());
    errno = saved;
    ioError("cannot rename into place", path);
  }
}

std::string readWholeFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) ioError("cannot open", path);
  std::string out;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int saved = errno;
      ::close(fd);
      errno = saved;
      ioError("cannot read", path);
    }
    if (n == 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return out;
}

}  // namespace shoal::overlay::dataplane
