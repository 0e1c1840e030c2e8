#include "manifest.h"

#include <Poco/Dynamic/Var.h>
#include <Poco/Exception.h>
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <shoal/plugin.h>
#include <shoal/plugin.hpp>

#include <cctype>
#include <ctime>
#include <sstream>

namespace shoal::runc {

using Poco::JSON::Array;
using Poco::JSON::Object;

namespace media {
std::string acceptHeader() {
  return std::string(kOciManifest) + ", " + kDockerManifest + ", " + kDockerList + ", " + kOciIndex;
}
}  // namespace media

namespace {

[[noreturn]] void bad(const std::string& what, const std::string& message) {
  throw sdk::Error(SHOAL_EIO, what + ": " + message);
}

Object::Ptr parseObject(const std::string& body, const std::string& what, const char* kind) {
  try {
    Poco::JSON::Parser parser;
    Poco::Dynamic::Var v = parser.parse(body);
    if (v.type() != typeid(Object::Ptr)) bad(what, std::string(kind) + " is not a JSON object");
    return v.extract<Object::Ptr>();
  } catch (const Poco::Exception& e) {
    bad(what, std::string(kind) + " is not valid JSON: " + e.message());
  }
}

std::string str(const Object::Ptr& o, const std::string& key) {
  if (o.isNull() || !o->has(key)) return "";
  Poco::Dynamic::Var v = o->get(key);
  if (v.isEmpty()) return "";
  if (!v.isString()) return v.convert<std::string>();
  return v.extract<std::string>();
}

Object::Ptr obj(const Object::Ptr& o, const std::string& key) {
  if (o.isNull() || !o->has(key)) return nullptr;
  return o->getObject(key);
}

Array::Ptr arr(const Object::Ptr& o, const std::string& key) {
  if (o.isNull() || !o->has(key)) return nullptr;
  return o->getArray(key);
}

std::vector<std::string> strings(const Object::Ptr& o, const std::string& key,
                                 const std::string& what) {
  std::vector<std::string> out;
  if (o.isNull() || !o->has(key) || o->get(key).isEmpty()) return out;
  Array::Ptr a = o->getArray(key);
  if (a.isNull()) bad(what, "\"" + key + "\" is not an array");
  for (std::size_t i = 0; i < a->size(); ++i) out.push_back(a->get(i).convert<std::string>());
  return out;
}

Descriptor descriptor(const Object::Ptr& o, const std::string& what) {
  if (o.isNull()) bad(what, "a descriptor is not an object");
  Descriptor d;
  d.mediaType = str(o, "mediaType");
  d.digest = str(o, "digest");
  if (!isSha256Digest(d.digest)) bad(what, "descriptor digest \"" + d.digest + "\" is not sha256");
  if (o->has("size")) d.size = o->getValue<int64_t>("size");
  if (Object::Ptr p = obj(o, "platform")) {
    d.platform.os = str(p, "os");
    d.platform.architecture = str(p, "architecture");
    d.platform.variant = str(p, "variant");
  }
  if (Object::Ptr a = obj(o, "annotations")) {
    for (const auto& [k, v] : *a) d.annotations[k] = v.convert<std::string>();
  }
  return d;
}

bool knownLayerType(const std::string& t) {
  static const char* kTypes[] = {
      "",
      "application/vnd.docker.image.rootfs.diff.tar.gzip",
      "application/vnd.docker.image.rootfs.diff.tar",
      "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
      "application/vnd.oci.image.layer.v1.tar",
      "application/vnd.oci.image.layer.v1.tar+gzip",
      "application/vnd.oci.image.layer.v1.tar+zstd",
      "application/vnd.oci.image.layer.nondistributable.v1.tar",
      "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
      "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
  };
  for (const char* k : kTypes) {
    if (t == k) return true;
  }
  return false;
}

}  // namespace

bool isIndex(const std::string& contentType, const std::string& body, const std::string& what) {
  Object::Ptr o = parseObject(body, what, "manifest");
  std::string type = str(o, "mediaType");
  if (type.empty()) {
    type = contentType.substr(0, contentType.find(';'));
    while (!type.empty() && std::isspace(static_cast<unsigned char>(type.back()))) type.pop_back();
  }
  if (str(o, "schemaVersion") == "1" ||
      type.rfind("application/vnd.docker.distribution.manifest.v1", 0) == 0) {
    bad(what, "Docker schema 1 manifests are not supported (push the image again with a " +
                  std::string("current client)"));
  }
  if (type == media::kDockerList || type == media::kOciIndex) return true;
  if (type == media::kDockerManifest || type == media::kOciManifest) return false;
  // Served as something generic: tell them apart by shape.
  if (o->has("manifests")) return true;
  if (o->has("layers") && o->has("config")) return false;
  bad(what, "unsupported manifest media type \"" + type + "\"");
}

Manifest parseManifest(const std::string& body, const std::string& what) {
  Object::Ptr o = parseObject(body, what, "manifest");
  Manifest m;
  m.mediaType = str(o, "mediaType");
  if (m.mediaType.empty()) m.mediaType = media::kOciManifest;
  Object::Ptr config = obj(o, "config");
  if (config.isNull()) bad(what, "manifest has no config");
  m.config = descriptor(config, what);
  Array::Ptr layers = arr(o, "layers");
  if (layers.isNull()) bad(what, "manifest has no layers");
  for (std::size_t i = 0; i < layers->size(); ++i) {
    Descriptor d = descriptor(layers->getObject(static_cast<unsigned>(i)), what);
    if (!knownLayerType(d.mediaType)) {
      bad(what, "layer " + d.digest + " has unsupported media type \"" + d.mediaType + "\"");
    }
    m.layers.push_back(std::move(d));
  }
  return m;
}

ImageIndex parseIndex(const std::string& body, const std::string& what) {
  Object::Ptr o = parseObject(body, what, "index");
  ImageIndex index;
  index.mediaType = str(o, "mediaType");
  if (index.mediaType.empty()) index.mediaType = media::kOciIndex;
  Array::Ptr list = arr(o, "manifests");
  if (list.isNull()) bad(what, "index has no manifests");
  for (std::size_t i = 0; i < list->size(); ++i) {
    index.manifests.push_back(descriptor(list->getObject(static_cast<unsigned>(i)), what));
  }
  return index;
}

const Descriptor& selectPlatform(const ImageIndex& index, const Platform& platform,
                                 const std::string& what) {
  const Descriptor* exact = nullptr;
  const Descriptor* loose = nullptr;
  for (const Descriptor& d : index.manifests) {
    if (d.platform.os != platform.os || d.platform.architecture != platform.architecture) continue;
    const std::string& v = d.platform.variant;
    if (v == platform.variant) {
      if (exact == nullptr) exact = &d;
    } else if (v.empty() || platform.variant.empty() ||
               (platform.architecture == "arm64" && (v == "v8" || platform.variant == "v8"))) {
      if (loose == nullptr) loose = &d;
    }
  }
  if (exact != nullptr) return *exact;
  if (loose != nullptr) return *loose;
  std::string have;
  for (const Descriptor& d : index.manifests) {
    have += (have.empty() ? "" : ", ") + d.platform.str();
  }
  throw sdk::Error(SHOAL_ENOENT, what + ": no manifest for " + platform.str() +
                                     " in the index (it has " + (have.empty() ? "none" : have) +
                                     ")");
}

ConfigInfo parseConfig(const std::string& body, const std::string& what) {
  Object::Ptr o = parseObject(body, what, "image config");
  ConfigInfo info;
  info.os = str(o, "os");
  info.architecture = str(o, "architecture");
  info.createdNs = parseTimeNs(str(o, "created"));
  Object::Ptr rootfs = obj(o, "rootfs");
  if (rootfs.isNull()) bad(what, "image config has no rootfs");
  info.diffIds = strings(rootfs, "diff_ids", what);
  for (const std::string& id : info.diffIds) {
    if (!isSha256Digest(id)) bad(what, "diff_id \"" + id + "\" is not a sha256 digest");
  }
  Object::Ptr c = obj(o, "config");
  if (!c.isNull()) {
    ImageConfig& ic = info.config;
    ic.env = strings(c, "Env", what);
    ic.entrypoint = strings(c, "Entrypoint", what);
    ic.cmd = strings(c, "Cmd", what);
    ic.workingDir = str(c, "WorkingDir");
    ic.user = str(c, "User");
    ic.stopSignal = str(c, "StopSignal");
    if (Object::Ptr h = obj(c, "Healthcheck")) {
      std::ostringstream s;
      h->stringify(s);
      ic.healthcheckJson = s.str();
    }
    if (Object::Ptr labels = obj(c, "Labels")) {
      for (const auto& [k, v] : *labels) ic.labels[k] = v.isEmpty() ? "" : v.convert<std::string>();
    }
  }
  return info;
}

int64_t parseTimeNs(const std::string& t) {
  // YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)
  auto digits = [&](std::size_t pos, std::size_t n, int& out) {
    if (pos + n > t.size()) return false;
    out = 0;
    for (std::size_t i = pos; i < pos + n; ++i) {
      if (!std::isdigit(static_cast<unsigned char>(t[i]))) return false;
      out = out * 10 + (t[i] - '0');
    }
    return true;
  };
  int year, mon, day, hour, min, sec;
  if (!digits(0, 4, year) || t.size() < 20 || t[4] != '-' || !digits(5, 2, mon) || t[7] != '-' ||
      !digits(8, 2, day) || (t[10] != 'T' && t[10] != 't' && t[10] != ' ') ||
      !digits(11, 2, hour) || t[13] != ':' || !digits(14, 2, min) || t[16] != ':' ||
      !digits(17, 2, sec)) {
    return 0;
  }
  std::size_t pos = 19;
  int64_t frac = 0;
  if (pos < t.size() && t[pos] == '.') {
    ++pos;
    int64_t scale = 100000000;
    while (pos < t.size() && std::isdigit(static_cast<unsigned char>(t[pos]))) {
      frac += (t[pos] - '0') * scale;
      scale /= 10;
      ++pos;
    }
  }
  int64_t offset = 0;
  if (pos < t.size() && (t[pos] == '+' || t[pos] == '-')) {
    int oh, om;
    if (!digits(pos + 1, 2, oh) || pos + 3 >= t.size() || !digits(pos + 4, 2, om)) return 0;
    offset = (oh * 3600 + om * 60) * (t[pos] == '+' ? 1 : -1);
  } else if (pos >= t.size() || (t[pos] != 'Z' && t[pos] != 'z')) {
    return 0;
  }
  struct tm tm {};
  tm.tm_year = year - 1900;
  tm.tm_mon = mon - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = min;
  tm.tm_sec = sec;
  int64_t secs = static_cast<int64_t>(timegm(&tm)) - offset;
  return secs * 1000000000 + frac;
}

}  // namespace shoal::runc
