#include "image_store.h"

#include <Poco/Dynamic/Var.h>
#include <Poco/Exception.h>
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <shoal/plugin.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <shoal/plugin.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <exception>
#include <sstream>
#include <thread>
#include <utility>

#include "digest.h"
#include "fs_util.h"
#include "layer.h"
#include "manifest.h"
#include "registry.h"

namespace shoal::runc {

using Poco::JSON::Array;
using Poco::JSON::Object;

namespace {

bool isHex(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
  });
}

std::vector<std::string> listDir(const std::string& path) {
  std::vector<std::string> names;
  DIR* dir = opendir(path.c_str());
  if (dir == nullptr) fs::throwErrno("opendir " + path);
  while (struct dirent* e = readdir(dir)) {
    std::string name = e->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  closedir(dir);
  return names;
}

template <class T>
void addUnique(std::vector<T>& v, const T& x) {
  if (std::find(v.begin(), v.end(), x) == v.end()) v.push_back(x);
}

Array toArray(const std::vector<std::string>& v) {
  Array a;
  for (const std::string& s : v) a.add(s);
  return a;
}

std::vector<std::string> fromArray(const Object::Ptr& o, const std::string& key) {
  std::vector<std::string> v;
  if (o.isNull() || !o->has(key) || o->get(key).isEmpty()) return v;  // absent or null
  Array::Ptr a = o->getArray(key);
  if (a.isNull()) throw Poco::DataFormatException("\"" + key + "\" is not an array");
  for (std::size_t i = 0; i < a->size(); ++i)
    v.push_back(a->getElement<std::string>(static_cast<unsigned>(i)));
  return v;
}

// The digest of a file's content.
std::string fileDigest(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fs::throwErrno("open " + path);
  Sha256 h;
  std::vector<char> buf(1 << 17);
  while (true) {
    ssize_t n = read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      close(fd);
      errno = err;
      fs::throwErrno("read " + path);
    }
    if (n == 0) break;
    h.update(buf.data(), static_cast<std::size_t>(n));
  }
  close(fd);
  return h.digest();
}

uint64_t fileSize(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) fs::throwErrno("stat " + path);
  return static_cast<uint64_t>(st.st_size);
}

// A path inside an archive, as components; refuses absolute paths and "..".
std::vector<std::string> archivePath(const std::string& what, const std::string& path) {
  if (path.empty() || path[0] == '/') {
    throw sdk::Error(SHOAL_EINVAL, what + ": path \"" + path + "\" escapes the archive");
  }
  std::vector<std::string> out;
  std::string::size_type begin = 0;
  while (begin <= path.size()) {
    auto end = path.find('/', begin);
    if (end == std::string::npos) end = path.size();
    std::string c = path.substr(begin, end - begin);
    if (c == "..") {
      throw sdk::Error(SHOAL_EINVAL, what + ": path \"" + path + "\" escapes the archive");
    }
    if (!c.empty() && c != ".") out.push_back(c);
    begin = end + 1;
  }
  return out;
}

std::string joinPath(const std::vector<std::string>& parts) {
  std::string s;
  for (const std::string& p : parts) s += (s.empty() ? "" : "/") + p;
  return s;
}

// Unpacks an image archive's regular files and directories into `dir`. Symlinks (docker save
// links a layer it saves twice) are resolved inside the archive and become hardlinks; anything
// else is refused.
void extractArchive(const std::string& tarPath, const std::string& dir) {
  const std::string what = "archive " + tarPath;
  struct Closer {
    void operator()(archive* a) const { archive_read_free(a); }
  };
  std::unique_ptr<archive, Closer> a(archive_read_new());
  archive_read_support_filter_all(a.get());
  archive_read_support_format_tar(a.get());
  if (archive_read_open_filename(a.get(), tarPath.c_str(), 1 << 17) != ARCHIVE_OK) {
    const char* e = archive_error_string(a.get());
    int code = access(tarPath.c_str(), F_OK) == 0 ? SHOAL_EINVAL : SHOAL_ENOENT;
    throw sdk::Error(code, what + ": " + (e ? e : "cannot open"));
  }
  std::vector<std::pair<std::string, std::string>> links;  // path -> target (both relative)
  archive_entry* entry = nullptr;
  while (true) {
    int r = archive_read_next_header(a.get(), &entry);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) {
      const char* e = archive_error_string(a.get());
      throw sdk::Error(SHOAL_EINVAL, what + ": not a tar archive: " + (e ? e : "read failed"));
    }
    const char* name = archive_entry_pathname(entry);
    std::vector<std::string> parts = archivePath(what, name ? name : "");
    if (parts.empty()) continue;
    std::string rel = joinPath(parts);
    std::string path = dir + "/" + rel;
    auto type = archive_entry_filetype(entry);
    std::string parent = path.substr(0, path.find_last_of('/'));
    fs::mkdirs(parent, 0700);
    if (type == AE_IFDIR) {
      fs::mkdirs(path, 0700);
    } else if (type == AE_IFREG && archive_entry_hardlink(entry) == nullptr) {
      int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
      if (fd < 0) fs::throwErrno("create " + path);
      const void* buf = nullptr;
      size_t size = 0;
      la_int64_t offset = 0;
      while ((r = archive_read_data_block(a.get(), &buf, &size, &offset)) == ARCHIVE_OK) {
        if (pwrite(fd, buf, size, offset) != static_cast<ssize_t>(size)) {
          int err = errno;
          close(fd);
          errno = err;
          fs::throwErrno("write " + path);
        }
      }
      close(fd);
      if (r < ARCHIVE_WARN) {
        const char* e = archive_error_string(a.get());
        throw sdk::Error(SHOAL_EINVAL, what + ": " + rel + ": " + (e ? e : "read failed"));
      }
    } else if (type == AE_IFLNK || archive_entry_hardlink(entry) != nullptr) {
      std::string target;
      if (const char* hard = archive_entry_hardlink(entry)) {
        target = joinPath(archivePath(what, hard));
      } else {
        // A symlink's target, relative to its directory, resolved lexically inside the archive.
        const char* sym = archive_entry_symlink(entry);
        std::string t = sym ? sym : "";
        if (t.empty() || t[0] == '/') {
          throw sdk::Error(SHOAL_EINVAL, what + ": symlink " + rel + " escapes the archive");
        }
        std::vector<std::string> stack(parts.begin(), parts.end() - 1);
        std::string::size_type begin = 0;
        while (begin <= t.size()) {
          auto end = t.find('/', begin);
          if (end == std::string::npos) end = t.size();
          std::string c = t.substr(begin, end - begin);
          if (c == "..") {
            if (stack.empty()) {
              throw sdk::Error(SHOAL_EINVAL, what + ": symlink " + rel + " escapes the archive");
            }
            stack.pop_back();
          } else if (!c.empty() && c != ".") {
            stack.push_back(c);
          }
          begin = end + 1;
        }
        target = joinPath(stack);
      }
      links.emplace_back(rel, target);
    } else {
      throw sdk::Error(SHOAL_EINVAL, what + ": " + rel + " is not a file or directory");
    }
  }
  for (const auto& [rel, target] : links) {
    std::string from = dir + "/" + target;
    struct stat st {};
    if (lstat(from.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
      throw sdk::Error(SHOAL_EINVAL, what + ": link " + rel + " points at " + target +
                                         ", which is not a file in the archive");
    }
    if (link(from.c_str(), (dir + "/" + rel).c_str()) != 0) fs::throwErrno("link " + rel);
  }
}

Array::Ptr parseJsonArray(const std::string& text, const std::string& what) {
  try {
    Poco::JSON::Parser parser;
    Poco::Dynamic::Var v = parser.parse(text);
    if (v.type() != typeid(Array::Ptr)) throw Poco::DataFormatException("not a JSON array");
    return v.extract<Array::Ptr>();
  } catch (const Poco::Exception& e) {
    throw sdk::Error(SHOAL_EINVAL, what + ": " + e.displayText());
  }
}

}  // namespace

// What a pull or load is using, kept from gc() until it is recorded (or has failed).
class ImageStore::Pins {
 public:
  explicit Pins(ImageStore& store) : store_(store) {}
  ~Pins() {
    std::lock_guard<std::mutex> lock(store_.mutex_);
    for (const std::string& item : items_) {
      auto it = store_.pins_.find(item);
      if (it != store_.pins_.end()) store_.pins_.erase(it);
    }
  }
  Pins(const Pins&) = delete;
  Pins& operator=(const Pins&) = delete;
  void add(const std::string& item) {
    std::lock_guard<std::mutex> lock(store_.mutex_);
    store_.pins_.insert(item);
    items_.push_back(item);
  }

 private:
  ImageStore& store_;
  std::vector<std::string> items_;
};

struct ImageStore::LayerSource {
  Descriptor blob;      // the compressed layer in the registry
  std::string diffId;   // from the config
  std::string chainId;  // where it goes
};

namespace {

// A file in partial/ nothing has written to for kPartialKeep.
bool stalePartial(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) return false;
  const auto written = std::chrono::system_clock::from_time_t(st.st_mtim.tv_sec);
  return std::chrono::system_clock::now() - written >= ImageStore::kPartialKeep;
}

}  // namespace

ImageStore::ImageStore(std::string root, RegistryOptions options, Platform platform)
    : root_(std::move(root)),
      blobs_(root_ + "/blobs/sha256"),
      layers_(root_ + "/layers"),
      tmp_(root_ + "/tmp"),
      partial_(root_ + "/partial"),
      indexPath_(root_ + "/images.json"),
      options_(std::move(options)),
      platform_(std::move(platform)),
      registry_(std::make_unique<RegistryClient>(options_)) {
  if (root_.empty() || root_[0] != '/') {
    throw sdk::Error(SHOAL_EINVAL, "image store root \"" + root_ + "\" is not an absolute path");
  }
  if (options_.concurrentDownloads < 1 || options_.timeoutSeconds < 1) {
    throw sdk::Error(SHOAL_EINVAL,
                     "image store: concurrentDownloads and timeoutSeconds must be >= 1");
  }
  fs::mkdirs(blobs_, 0700);
  fs::mkdirs(layers_, 0700);
  fs::mkdirs(tmp_, 0700);
  fs::mkdirs(partial_, 0700);
  const std::string lockPath = root_ + "/lock";
  lockFd_ = open(lockPath.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lockFd_ < 0) fs::throwErrno("open " + lockPath);
  if (flock(lockFd_, LOCK_EX | LOCK_NB) != 0) {
    close(lockFd_);
    throw sdk::Error(SHOAL_EBUSY, "image store " + root_ + " is in use by another image store");
  }
  try {
    // A crash leaves its half-done work only in tmp/ (downloads, unpacks, writes, gc victims).
    for (const std::string& name : listDir(tmp_)) fs::removeTree(tmp_ + "/" + name);
    for (const std::string& name : listDir(layers_)) {
      if (name.size() != 64 || !isHex(name)) fs::removeTree(layers_ + "/" + name);
    }
    for (const std::string& name : listDir(blobs_)) {
      if (name.size() != 64 || !isHex(name)) fs::removeTree(blobs_ + "/" + name);
    }
    // Interrupted layer downloads stay for the next pull to go on from, for kPartialKeep.
    for (const std::string& name : listDir(partial_)) {
      if (name.size() != 64 || !isHex(name) || stalePartial(partial_ + "/" + name)) {
        fs::removeTree(partial_ + "/" + name);
      }
    }
    std::lock_guard<std::mutex> lock(mutex_);
    readIndexLocked();
  } catch (...) {
    close(lockFd_);
    throw;
  }
}

ImageStore::~ImageStore() {
  if (lockFd_ >= 0) close(lockFd_);
}

std::string ImageStore::layerDir(const std::string& chainId) const {
  return layers_ + "/" + digestHex(chainId);
}

std::string ImageStore::blobPath(const std::string& digest) const {
  return blobs_ + "/" + digestHex(digest);
}

std::vector<std::string> ImageStore::layerDirs(const Image& image) const {
  std::vector<std::string> chain = chainIds(image.layers);
  std::vector<std::string> dirs;
  for (auto it = chain.rbegin(); it != chain.rend(); ++it) dirs.push_back(layerDir(*it));
  return dirs;
}

bool ImageStore::complete(const Image& image) const {
  for (const std::string& dir : layerDirs(image)) {
    if (!fs::isDir(dir)) return false;
  }
  return true;
}

// --- the index file -------------------------------------------------------------------------

void ImageStore::readIndexLocked() {
  std::string text;
  try {
    text = fs::readFile(indexPath_);
  } catch (const sdk::Error& e) {
    if (e.code() == SHOAL_ENOENT) return;
    throw;
  }
  auto corrupt = [&](const std::string& why) {
    return sdk::Error(SHOAL_EIO, "image store index " + indexPath_ + " is corrupt (" + why +
                                     "); move it aside to start with an empty store");
  };
  try {
    Poco::JSON::Parser parser;
    Poco::Dynamic::Var v = parser.parse(text);
    if (v.type() != typeid(Object::Ptr)) throw corrupt("not a JSON object");
    Object::Ptr doc = v.extract<Object::Ptr>();
    if (doc->optValue<int>("version", 0) != 1) throw corrupt("unknown version");
    Array::Ptr list = doc->getArray("images");
    if (list.isNull()) throw corrupt("no \"images\" array");
    for (std::size_t i = 0; i < list->size(); ++i) {
      Object::Ptr o = list->getObject(static_cast<unsigned>(i));
      if (o.isNull()) throw corrupt("an image is not an object");
      Record r;
      Image& im = r.image;
      im.id = o->getValue<std::string>("id");
      if (!isSha256Digest(im.id)) throw corrupt("bad image id \"" + im.id + "\"");
      im.manifestDigest = o->optValue<std::string>("manifestDigest", "");
      im.repoDigests = fromArray(o, "repoDigests");
      im.tags = fromArray(o, "tags");
      im.layers = fromArray(o, "layers");
      for (const std::string& l : im.layers) {
        if (!isSha256Digest(l)) throw corrupt("bad layer \"" + l + "\"");
      }
      im.size = o->optValue<Poco::UInt64>("size", 0);
      im.createdNs = o->optValue<Poco::Int64>("createdNs", 0);
      im.os = o->optValue<std::string>("os", "");
      im.architecture = o->optValue<std::string>("architecture", "");
      if (Object::Ptr c = o->getObject("config")) {
        im.config.env = fromArray(c, "env");
        im.config.entrypoint = fromArray(c, "entrypoint");
        im.config.cmd = fromArray(c, "cmd");
        im.config.workingDir = c->optValue<std::string>("workingDir", "");
        im.config.user = c->optValue<std::string>("user", "");
        im.config.stopSignal = c->optValue<std::string>("stopSignal", "");
        im.config.healthcheckJson = c->optValue<std::string>("healthcheck", "");
        if (Object::Ptr labels = c->getObject("labels")) {
          for (const auto& [k, lv] : *labels) im.config.labels[k] = lv.convert<std::string>();
        }
      }
      r.blobs = fromArray(o, "blobs");
      for (const std::string& h : fromArray(o, "holders")) r.holders.insert(h);
      for (const std::string& t : im.tags) tags_[t] = im.id;
      images_[im.id] = std::move(r);
    }
  } catch (const sdk::Error&) {
    throw;
  } catch (const Poco::Exception& e) {
    throw corrupt(e.displayText());
  } catch (const std::exception& e) {
    throw corrupt(e.what());
  }
  // A tag claimed twice (only a hand-edited file does that) keeps its last claimant.
  for (auto& [id, r] : images_) {
    auto& tags = r.image.tags;
    tags.erase(std::remove_if(tags.begin(), tags.end(),
                              [&, id = id](const std::string& t) { return tags_[t] != id; }),
               tags.end());
  }
}

void ImageStore::persistLocked() {
  Object doc(Poco::JSON_PRESERVE_KEY_ORDER);
  doc.set("version", 1);
  Array list;
  for (const auto& [id, r] : images_) {
    const Image& im = r.image;
    Object o(Poco::JSON_PRESERVE_KEY_ORDER);
    o.set("id", im.id);
    o.set("manifestDigest", im.manifestDigest);
    o.set("repoDigests", toArray(im.repoDigests));
    o.set("tags", toArray(im.tags));
    o.set("layers", toArray(im.layers));
    o.set("size", static_cast<Poco::UInt64>(im.size));
    o.set("createdNs", static_cast<Poco::Int64>(im.createdNs));
    o.set("os", im.os);
    o.set("architecture", im.architecture);
    Object c(Poco::JSON_PRESERVE_KEY_ORDER);
    c.set("env", toArray(im.config.env));
    c.set("entrypoint", toArray(im.config.entrypoint));
    c.set("cmd", toArray(im.config.cmd));
    c.set("workingDir", im.config.workingDir);
    c.set("user", im.config.user);
    c.set("stopSignal", im.config.stopSignal);
    c.set("healthcheck", im.config.healthcheckJson);
    Object labels;
    for (const auto& [k, v] : im.config.labels) labels.set(k, v);
    c.set("labels", labels);
    o.set("config", c);
    o.set("blobs", toArray(r.blobs));
    o.set("holders", toArray(std::vector<std::string>(r.holders.begin(), r.holders.end())));
    list.add(o);
  }
  doc.set("images", list);
  std::ostringstream text;
  doc.stringify(text);
  fs::writeFileAtomic(indexPath_, text.str(), tmp_);
}

// --- lookups --------------------------------------------------------------------------------

const ImageStore::Record* ImageStore::resolveLocked(const std::string& text) const {
  return const_cast<ImageStore*>(this)->resolveLocked(text);
}

ImageStore::Record* ImageStore::resolveLocked(const std::string& text) {
  std::string id = text;
  if (id.size() == 64 && isHex(id)) id = "sha256:" + id;
  if (isSha256Digest(id)) {
    auto it = images_.find(id);
    return it == images_.end() ? nullptr : &it->second;
  }
  Reference ref = parseReference(text);
  if (!ref.digest.empty()) {
    const std::string repoDigest = ref.name() + "@" + ref.digest;
    for (auto& [k, r] : images_) {
      const auto& rd = r.image.repoDigests;
      if (std::find(rd.begin(), rd.end(), repoDigest) != rd.end()) return &r;
    }
    // Content-addressed: the same manifest or config is the same image, whatever its name.
    for (auto& [k, r] : images_) {
      if (r.image.manifestDigest == ref.digest || r.image.id == ref.digest) return &r;
    }
    return nullptr;
  }
  if (auto it = tags_.find(ref.str()); it != tags_.end()) {
    auto im = images_.find(it->second);
    if (im != images_.end()) return &im->second;
  }
  // A short id, as Docker accepts one.
  if (text.size() >= 12 && text.size() < 64 && isHex(text)) {
    Record* found = nullptr;
    for (auto& [k, r] : images_) {
      if (k.compare(7, text.size(), text) == 0) {
        if (found != nullptr) return nullptr;  // ambiguous
        found = &r;
      }
    }
    return found;
  }
  return nullptr;
}

Image ImageStore::viewLocked(const Record& r) const { return r.image; }

std::optional<Image> ImageStore::find(const std::string& ref) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const Record* r = resolveLocked(ref);
  if (r == nullptr) return std::nullopt;
  return viewLocked(*r);
}

std::vector<Image> ImageStore::list() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<Image> out;
  for (const auto& [id, r] : images_) out.push_back(viewLocked(r));
  return out;
}

Image ImageStore::ensure(const std::string& ref) {
  if (std::optional<Image> local = find(ref); local && complete(*local)) return *local;
  return pull(ref);
}

// --- pulling --------------------------------------------------------------------------------

std::string ImageStore::resolve(const std::string& text) {
  Reference ref = parseReference(text);
  const std::string what = "image " + ref.familiar();
  RegistryClient::Fetched top =
      registry_->manifest(ref, ref.digest.empty() ? ref.tag : ref.digest, what);
  isIndex(top.contentType, top.body, what);  // refuses what we could not pull
  Reference pinned = ref;
  pinned.digest = top.digest;
  return pinned.str();
}

Image ImageStore::pull(const std::string& text) {
  Reference ref = parseReference(text);
  const std::string key = ref.str();
  std::promise<Image> promise;
  std::shared_future<Image> shared;
  bool owner = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = pulls_.find(key);
    if (it != pulls_.end()) {
      shared = it->second;
    } else {
      shared = promise.get_future().share();
      pulls_[key] = shared;
      owner = true;
    }
  }
  if (owner) {
    try {
      promise.set_value(doPull(ref));
    } catch (...) {
      promise.set_exception(std::current_exception());
    }
    std::lock_guard<std::mutex> lock(mutex_);
    pulls_.erase(key);
  }
  return shared.get();
}

Image ImageStore::doPull(const Reference& ref) {
  const std::string what = "image " + ref.familiar();
  Pins pins(*this);
  RegistryClient::Fetched top =
      registry_->manifest(ref, ref.digest.empty() ? ref.tag : ref.digest, what);
  std::vector<std::pair<std::string, std::string>> docs;  // digest, bytes: kept in blobs/
  docs.emplace_back(top.digest, top.body);
  Manifest manifest;
  std::string manifestDigest;
  if (isIndex(top.contentType, top.body, what)) {
    ImageIndex index = parseIndex(top.body, what);
    const Descriptor& chosen = selectPlatform(index, platform_, what);
    RegistryClient::Fetched platformManifest = registry_->manifest(ref, chosen.digest, what);
    if (isIndex(platformManifest.contentType, platformManifest.body, what)) {
      throw sdk::Error(SHOAL_EIO, what + ": an index inside an index is not supported");
    }
    manifest = parseManifest(platformManifest.body, what);
    manifestDigest = platformManifest.digest;
    docs.emplace_back(platformManifest.digest, platformManifest.body);
  } else {
    manifest = parseManifest(top.body, what);
    manifestDigest = top.digest;
  }
  std::string configBody = registry_->blob(ref, manifest.config.digest, manifest.config.size);
  ConfigInfo info = parseConfig(configBody, what);
  if (info.diffIds.size() != manifest.layers.size()) {
    throw sdk::Error(SHOAL_EIO, what + ": the manifest has " +
                                    std::to_string(manifest.layers.size()) +
                                    " layers, the config " + std::to_string(info.diffIds.size()));
  }
  docs.emplace_back(manifest.config.digest, configBody);
  std::vector<std::string> blobs;
  for (const auto& [digest, bytes] : docs) {
    pins.add(digest);
    storeBlob(digest, bytes);
    blobs.push_back(digest);
  }
  std::vector<std::string> chains = chainIds(info.diffIds);
  std::vector<LayerSource> layers;
  uint64_t size = 0;
  for (std::size_t i = 0; i < chains.size(); ++i) {
    pins.add(chains[i]);
    layers.push_back(LayerSource{manifest.layers[i], info.diffIds[i], chains[i]});
    if (manifest.layers[i].size > 0) size += static_cast<uint64_t>(manifest.layers[i].size);
  }
  fetchLayers(ref, layers);

  Image image;
  image.id = manifest.config.digest;
  image.manifestDigest = manifestDigest;
  image.repoDigests.push_back(ref.name() + "@" + top.digest);
  image.layers = info.diffIds;
  image.size = size;
  image.createdNs = info.createdNs;
  image.os = info.os;
  image.architecture = info.architecture;
  image.config = info.config;
  std::vector<std::string> tags;
  if (!ref.tag.empty()) tags.push_back(ref.name() + ":" + ref.tag);
  return record(std::move(image), blobs, tags);
}

void ImageStore::fetchLayers(const Reference& ref, const std::vector<LayerSource>& layers) {
  std::vector<const LayerSource*> missing;
  for (const LayerSource& l : layers) {
    if (!fs::isDir(layerDir(l.chainId))) missing.push_back(&l);
  }
  if (missing.empty()) return;
  std::atomic<std::size_t> next{0};
  std::atomic<bool> stop{false};
  std::mutex errorMutex;
  std::exception_ptr error;
  auto work = [&] {
    while (!stop) {
      std::size_t k = next++;
      if (k >= missing.size()) return;
      try {
        fetchLayer(ref, *missing[k]);
      } catch (...) {
        std::lock_guard<std::mutex> lock(errorMutex);
        if (!error) error = std::current_exception();
        stop = true;
      }
    }
  };
  std::size_t n =
      std::min<std::size_t>(static_cast<std::size_t>(options_.concurrentDownloads), missing.size());
  std::vector<std::thread> workers;
  for (std::size_t i = 1; i < n; ++i) workers.emplace_back(work);
  work();  // this thread is one of the workers
  for (std::thread& t : workers) t.join();
  if (error) std::rethrow_exception(error);
}

void ImageStore::fetchLayer(const Reference& ref, const LayerSource& layer) {
  std::promise<void> promise;
  std::shared_future<void> shared;
  bool owner = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (fs::isDir(layerDir(layer.chainId))) return;
    auto it = unpacking_.find(layer.chainId);
    if (it != unpacking_.end()) {
      shared = it->second;  // another pull is fetching the same layer: wait for it
    } else {
      shared = promise.get_future().share();
      unpacking_[layer.chainId] = shared;
      owner = true;
    }
  }
  if (owner) {
    // The download goes to partial/<blob>, where an interrupted one is kept for the next pull
    // (after a restart too) to go on from; a blob another layer is already downloading (the
    // same bytes under another parent: rare) goes to tmp/, from scratch.
    bool resumable = false;
    std::string blob = partial_ + "/" + digestHex(layer.blob.digest);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      resumable = isSha256Digest(layer.blob.digest) && downloading_.insert(blob).second;
    }
    if (!resumable) blob = tmp_ + "/" + fs::uniqueName("blob");
    bool fetched = false;
    try {
      registry_->blobToFile(ref, layer.blob.digest, layer.blob.size, blob, resumable);
      fetched = true;
      unpackInto(blob, layer.diffId, layer.chainId, "layer " + layer.blob.digest);
      unlink(blob.c_str());
      promise.set_value();
    } catch (...) {
      // blobToFile decided whether a partial download stays; anything it finished goes.
      if (fetched || !resumable) unlink(blob.c_str());
      promise.set_exception(std::current_exception());
    }
    std::lock_guard<std::mutex> lock(mutex_);
    if (resumable) downloading_.erase(blob);
    unpacking_.erase(layer.chainId);
  }
  shared.get();
}

void ImageStore::unpackInto(const std::string& blobPath, const std::string& diffId,
                            const std::string& chain, const std::string& what) {
  const std::string dir = tmp_ + "/" + fs::uniqueName("layer");
  if (mkdir(dir.c_str(), 0755) != 0) fs::throwErrno("mkdir " + dir);
  try {
    UnpackResult r = unpackLayer(blobPath, dir, what);
    if (r.diffId != diffId) {
      throw sdk::Error(SHOAL_EIO, what + ": digest mismatch: its uncompressed content is " +
                                      r.diffId + ", the image config says " + diffId);
    }
    // Everything written before the rename, so a layer in layers/ is whole even after a power
    // cut; a crash before the rename leaves only tmp/, which the next start clears.
    int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
      syncfs(fd);
      close(fd);
    }
    const std::string target = layerDir(chain);
    if (rename(dir.c_str(), target.c_str()) != 0) {
      if (errno != EEXIST && errno != ENOTEMPTY) fs::throwErrno("rename " + dir + " to " + target);
      fs::removeTree(dir);  // someone else finished it first
    }
    fs::fsyncPath(layers_);
  } catch (...) {
    try {
      fs::removeTree(dir);
    } catch (const std::exception&) {
    }
    throw;
  }
}

void ImageStore::storeBlob(const std::string& digest, const std::string& bytes) {
  const std::string path = blobPath(digest);
  if (fs::exists(path)) return;
  fs::writeFileAtomic(path, bytes, tmp_);
}

Image ImageStore::record(Image image, const std::vector<std::string>& blobs,
                         const std::vector<std::string>& tags) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto [it, fresh] = images_.try_emplace(image.id);
  Record& r = it->second;
  if (fresh) {
    r.image = std::move(image);
    r.image.tags.clear();
  } else {
    // The same config reached through another manifest (or again): one image, more names.
    for (const std::string& d : image.repoDigests) addUnique(r.image.repoDigests, d);
    if (!image.manifestDigest.empty()) r.image.manifestDigest = image.manifestDigest;
    if (image.size != 0) r.image.size = image.size;
  }
  for (const std::string& b : blobs) addUnique(r.blobs, b);
  for (const std::string& t : tags) {
    auto old = tags_.find(t);
    if (old != tags_.end() && old->second != r.image.id) {
      auto prev = images_.find(old->second);
      if (prev != images_.end()) {
        auto& pt = prev->second.image.tags;
        pt.erase(std::remove(pt.begin(), pt.end(), t), pt.end());
      }
    }
    tags_[t] = r.image.id;
    addUnique(r.image.tags, t);
  }
  persistLocked();
  return viewLocked(r);
}

// --- remove, holders, gc --------------------------------------------------------------------

void ImageStore::remove(const std::string& text, bool force) {
  std::lock_guard<std::mutex> lock(mutex_);
  Record* r = resolveLocked(text);
  if (r == nullptr) throw sdk::Error(SHOAL_ENOENT, "image " + text + ": no such image");
  Image& im = r->image;
  std::string id = text.size() == 64 && isHex(text) ? "sha256:" + text : text;
  // A short id only when no tag of that name matched (resolveLocked looks at tags first).
  bool byId = isSha256Digest(id) ||
              (text.size() >= 12 && isHex(text) && !tags_.count(parseReference(text).str()));
  std::string tag, repoDigest;
  if (!byId) {
    Reference ref = parseReference(text);
    if (ref.digest.empty()) {
      tag = ref.str();
    } else {
      repoDigest = ref.name() + "@" + ref.digest;
      if (std::find(im.repoDigests.begin(), im.repoDigests.end(), repoDigest) ==
          im.repoDigests.end()) {
        byId = true;  // matched by manifest digest or id: the image itself
      }
    }
  }
  std::vector<std::string> tagsLeft = im.tags, digestsLeft = im.repoDigests;
  if (!byId) {
    if (!tag.empty()) {
      tagsLeft.erase(std::remove(tagsLeft.begin(), tagsLeft.end(), tag), tagsLeft.end());
      // As Docker does: the last tag of a repository takes that repository's digests with it.
      const std::string name = tag.substr(0, tag.rfind(':'));
      bool sameRepo = std::any_of(tagsLeft.begin(), tagsLeft.end(), [&](const std::string& t) {
        return t.substr(0, t.rfind(':')) == name;
      });
      if (!sameRepo) {
        digestsLeft.erase(
            std::remove_if(digestsLeft.begin(), digestsLeft.end(),
                           [&](const std::string& d) { return d.rfind(name + "@", 0) == 0; }),
            digestsLeft.end());
      }
    }
    if (!repoDigest.empty()) {
      digestsLeft.erase(std::remove(digestsLeft.begin(), digestsLeft.end(), repoDigest),
                        digestsLeft.end());
    }
  }
  const bool deleting = byId || (tagsLeft.empty() && digestsLeft.empty());
  if (deleting && !r->holders.empty() && !force) {
    std::string who;
    for (const std::string& h : r->holders) who += (who.empty() ? "" : ", ") + h;
    throw sdk::Error(SHOAL_EBUSY, "image " + text + " (" + im.id.substr(7, 12) + ") is in use by " +
                                      std::to_string(r->holders.size()) +
                                      (r->holders.size() == 1 ? " container: " : " containers: ") +
                                      who);
  }
  if (deleting) {
    tagsLeft.clear();
    digestsLeft.clear();
  }
  for (const std::string& t : im.tags) {
    if (std::find(tagsLeft.begin(), tagsLeft.end(), t) == tagsLeft.end()) tags_.erase(t);
  }
  im.tags = tagsLeft;
  im.repoDigests = digestsLeft;
  // A forced delete of a held image keeps it, nameless, until its last holder lets go.
  if (deleting && r->holders.empty()) images_.erase(im.id);
  persistLocked();
}

void ImageStore::acquire(const std::string& imageId, const std::string& holder) {
  std::lock_guard<std::mutex> lock(mutex_);
  Record* r = resolveLocked(imageId);
  if (r == nullptr) throw sdk::Error(SHOAL_ENOENT, "image " + imageId + ": no such image");
  if (r->holders.insert(holder).second) persistLocked();
}

void ImageStore::release(const std::string& imageId, const std::string& holder) {
  std::lock_guard<std::mutex> lock(mutex_);
  Record* r = nullptr;
  try {
    r = resolveLocked(imageId);
  } catch (const sdk::Error&) {
    return;
  }
  if (r != nullptr && r->holders.erase(holder) > 0) persistLocked();
}

ImageStore::GcResult ImageStore::gc() {
  GcResult result;
  std::vector<std::string> victims;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto it = images_.begin(); it != images_.end();) {
      const Image& im = it->second.image;
      if (im.tags.empty() && im.repoDigests.empty() && it->second.holders.empty()) {
        it = images_.erase(it);
        ++result.images;
      } else {
        ++it;
      }
    }
    if (result.images > 0) persistLocked();
    std::set<std::string> keep(pins_.begin(), pins_.end());
    for (const auto& [id, r] : images_) {
      for (const std::string& c : chainIds(r.image.layers)) keep.insert(digestHex(c));
      for (const std::string& b : r.blobs) keep.insert(digestHex(b));
    }
    for (const std::string& p : pins_) keep.insert(digestHex(p));
    // Victims move into tmp/ under the lock (a rename is quick), so a pull that starts now
    // cannot see a layer that is half deleted; the slow delete happens after.
    auto take = [&](const std::string& dir, std::size_t& count) {
      for (const std::string& name : listDir(dir)) {
        if (keep.count(name)) continue;
        std::string victim = tmp_ + "/" + fs::uniqueName("gc");
        if (rename((dir + "/" + name).c_str(), victim.c_str()) == 0) {
          victims.push_back(victim);
          ++count;
        }
      }
    };
    take(layers_, result.layers);
    take(blobs_, result.blobs);
    // Interrupted downloads nobody has gone on with for a while.
    for (const std::string& name : listDir(partial_)) {
      const std::string path = partial_ + "/" + name;
      if (downloading_.count(path) || !stalePartial(path)) continue;
      std::string victim = tmp_ + "/" + fs::uniqueName("gc");
      if (rename(path.c_str(), victim.c_str()) == 0) {
        victims.push_back(victim);
        ++result.partials;
      }
    }
  }
  for (const std::string& v : victims) result.bytes += fs::removeTree(v);
  return result;
}

// --- loading archives -----------------------------------------------------------------------

std::vector<Image> ImageStore::load(const std::string& tarPath) {
  Pins pins(*this);
  const std::string dir = tmp_ + "/" + fs::uniqueName("load");
  if (mkdir(dir.c_str(), 0700) != 0) fs::throwErrno("mkdir " + dir);
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      try {
        fs::removeTree(dir);
      } catch (const std::exception&) {
      }
    }
  } cleanup{dir};
  extractArchive(tarPath, dir);
  if (fs::exists(dir + "/manifest.json")) return loadDockerArchive(dir, pins);
  if (fs::exists(dir + "/index.json")) return loadOciLayout(dir, pins);
  throw sdk::Error(SHOAL_EINVAL, "archive " + tarPath +
                                     " is neither a docker-archive (manifest.json) nor an OCI " +
                                     "image layout (index.json)");
}

Image ImageStore::loadImage(const std::string& dir, const std::string& configBody,
                            const std::string& what, const std::vector<std::string>& layerFiles,
                            const std::string& manifestDigest,
                            const std::vector<std::string>& blobs, uint64_t size,
                            const std::vector<std::string>& tags, Pins& pins) {
  ConfigInfo info = parseConfig(configBody, what);
  if (info.diffIds.size() != layerFiles.size()) {
    throw sdk::Error(SHOAL_EINVAL, what + ": " + std::to_string(layerFiles.size()) +
                                       " layers, but the config lists " +
                                       std::to_string(info.diffIds.size()));
  }
  std::string configDigest = sha256Digest(configBody);
  pins.add(configDigest);
  storeBlob(configDigest, configBody);
  std::vector<std::string> chains = chainIds(info.diffIds);
  for (std::size_t i = 0; i < chains.size(); ++i) {
    pins.add(chains[i]);
    if (fs::isDir(layerDir(chains[i]))) continue;
    unpackInto(dir + "/" + layerFiles[i], info.diffIds[i], chains[i],
               "layer " + info.diffIds[i] + " of " + what);
  }
  Image image;
  image.id = configDigest;
  image.manifestDigest = manifestDigest;
  image.layers = info.diffIds;
  image.size = size;
  image.createdNs = info.createdNs;
  image.os = info.os;
  image.architecture = info.architecture;
  image.config = info.config;
  std::vector<std::string> all = blobs;
  all.push_back(configDigest);
  return record(std::move(image), all, tags);
}

std::vector<Image> ImageStore::loadDockerArchive(const std::string& dir, Pins& pins) {
  const std::string what = "docker-archive manifest.json";
  Array::Ptr entries = parseJsonArray(fs::readFile(dir + "/manifest.json"), what);
  std::vector<Image> out;
  for (std::size_t i = 0; i < entries->size(); ++i) {
    Object::Ptr e = entries->getObject(static_cast<unsigned>(i));
    if (e.isNull()) throw sdk::Error(SHOAL_EINVAL, what + ": an entry is not an object");
    std::vector<std::string> layers, tags;
    std::string configFile;
    try {
      configFile = joinPath(archivePath(what, e->getValue<std::string>("Config")));
      for (const std::string& l : fromArray(e, "Layers")) {
        layers.push_back(joinPath(archivePath(what, l)));
      }
      for (const std::string& t : fromArray(e, "RepoTags")) {
        Reference ref = parseReference(t);
        if (!ref.digest.empty()) continue;
        tags.push_back(ref.str());
      }
    } catch (const Poco::Exception& ex) {
      throw sdk::Error(SHOAL_EINVAL, what + ": " + ex.displayText());
    }
    uint64_t size = 0;
    for (const std::string& l : layers) size += fileSize(dir + "/" + l);
    std::string config = fs::readFile(dir + "/" + configFile);
    out.push_back(loadImage(dir, config, "image " + configFile, layers, "", {}, size, tags, pins));
  }
  return out;
}

std::vector<Image> ImageStore::loadOciLayout(const std::string& dir, Pins& pins) {
  const std::string what = "OCI layout index.json";
  auto readBlob = [&](const std::string& digest) {
    if (!isSha256Digest(digest)) throw sdk::Error(SHOAL_EINVAL, what + ": bad digest " + digest);
    std::string path = dir + "/blobs/sha256/" + digestHex(digest);
    if (!fs::exists(path)) {
      throw sdk::Error(SHOAL_EINVAL, what + ": blob " + digest + " is not in the archive");
    }
    return path;
  };
  auto readSmall = [&](const std::string& digest) {
    std::string body = fs::readFile(readBlob(digest));
    checkDigest("blob", digest, sha256Digest(body));
    return body;
  };
  ImageIndex index;
  try {
    index = parseIndex(fs::readFile(dir + "/index.json"), what);
  } catch (const sdk::Error& e) {
    throw sdk::Error(SHOAL_EINVAL, e.what());
  }
  std::vector<Image> out;
  for (const Descriptor& d : index.manifests) {
    std::vector<std::string> tags;
    std::string name;
    if (auto it = d.annotations.find("io.containerd.image.name"); it != d.annotations.end()) {
      name = it->second;
    } else if (auto rn = d.annotations.find("org.opencontainers.image.ref.name");
               rn != d.annotations.end() && rn->second.find_first_of("/:") != std::string::npos) {
      name = rn->second;
    }
    if (!name.empty()) {
      Reference ref = parseReference(name);
      if (ref.digest.empty()) tags.push_back(ref.str());
    }
    std::string body = readSmall(d.digest);
    std::vector<std::string> blobs{d.digest};
    std::string manifestDigest = d.digest;
    if (isIndex(d.mediaType, body, what)) {
      ImageIndex sub = parseIndex(body, what);
      const Descriptor& chosen = selectPlatform(sub, platform_, "image " + d.digest);
      body = readSmall(chosen.digest);
      manifestDigest = chosen.digest;
      blobs.push_back(chosen.digest);
    }
    Manifest m = parseManifest(body, "manifest " + manifestDigest);
    for (const std::string& b : blobs) {
      pins.add(b);
      storeBlob(b, fs::readFile(readBlob(b)));
    }
    std::vector<std::string> files;
    uint64_t size = 0;
    for (const Descriptor& l : m.layers) {
      std::string path = readBlob(l.digest);
      checkDigest("blob", l.digest, fileDigest(path));
      files.push_back("blobs/sha256/" + digestHex(l.digest));
      size += fileSize(path);
    }
    std::string config = readSmall(m.config.digest);
    out.push_back(loadImage(dir, config, "image " + manifestDigest, files, manifestDigest, blobs,
                            size, tags, pins));
  }
  return out;
}

}  // namespace shoal::runc
