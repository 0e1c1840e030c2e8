// The image half of runtime-runc: references, a registry client, a content-addressed store of
// images and their unpacked layers, and image archives (docker save, OCI layouts). See
// README.md for the store's layout, crash safety, auth flow and limits.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "reference.h"

namespace shoal::runc {

struct RegistryOptions {
  std::vector<std::string> insecure;  // "host:port" entries reached over plain HTTP (else HTTPS);
                                      // loopback registries (127.x, localhost, ::1) always are
  std::string credentialsFile;        // Docker config.json shape {"auths":{"host:port":{"auth":
                                      // "base64(user:pass)"}}}; "" = none. Read at each login.
  int concurrentDownloads = 3;        // layers downloaded and unpacked at once, per pull
  int timeoutSeconds = 30;            // per connect / read on a registry connection
  // Docker's certs.d layout: the *.crt files in "<certsDir>/<host:port>/" are CAs trusted for
  // that registry (beside the system's), which is then reached over HTTPS, loopback ones too;
  // "" = none.
  std::string certsDir;
};

struct ImageConfig {  // from the config blob's "config" (Docker and OCI)
  std::vector<std::string> env, entrypoint, cmd;
  std::string workingDir, user, stopSignal;
  std::string healthcheckJson;  // Docker's config.Healthcheck object as compact JSON, "" if none
  std::map<std::string, std::string> labels;
};

struct Image {
  std::string id;                        // config digest "sha256:..."
  std::string manifestDigest;            // the platform manifest used ("" from a docker-archive)
  std::vector<std::string> repoDigests;  // "name@sha256:..." (index digest when pulled through
                                         // an index); none for loaded images
  std::vector<std::string> tags;         // normalised refs (Reference::str()) that point at it
  std::vector<std::string> layers;       // diff_ids, bottom first
  uint64_t size = 0;                     // sum of compressed layer sizes
  int64_t createdNs = 0;
  std::string os, architecture;
  ImageConfig config;
};

class RegistryClient;

// Images on this node, under one root directory that the store owns alone (a lock file keeps a
// second store, in this process or another, out). Errors are shoal::sdk::Error with
// SHOAL_EINVAL (bad input: a malformed reference or archive), SHOAL_ENOENT (no such image, tag
// or blob), SHOAL_EIO (network, registry error, corrupt data or digest mismatch, disk),
// SHOAL_EBUSY (the image is in use, or the root is locked), and messages that name the thing.
// THREAD-SAFE: every method may be called from several threads at once.
class ImageStore {
 public:
  // Opens (creating it if needed) the store at `root`, an absolute path; removes what a crash
  // left half done (temporary blobs and layers). SHOAL_EIO when images.json is corrupt.
  ImageStore(std::string root, RegistryOptions options, Platform platform = Platform::host());
  ~ImageStore();
  ImageStore(const ImageStore&) = delete;
  ImageStore& operator=(const ImageStore&) = delete;

  // The digest the registry serves for ref now, as "name:tag@sha256:..." (the index digest for
  // an index; "name@sha256:..." for a ref given by digest only); no layers downloaded. (The
  // manager pins service images with it.)
  std::string resolve(const std::string& ref);
  // Downloads (concurrent layers, each verified by digest) and unpacks; returns the image and
  // points ref's tag at it. Two concurrent pulls of the same ref share the work, and pulls of
  // different images share the layers they have in common.
  Image pull(const std::string& ref);
  // The local image for ref (a ref with a digest matches by digest: repo digest, manifest
  // digest or id), pulling it when absent or when one of its layers is missing.
  Image ensure(const std::string& ref);
  // ref: a reference, or an image id ("sha256:<hex>", the 64 hex digits, or a unique prefix of
  // at least 12 of them).
  std::optional<Image> find(const std::string& ref) const;
  // Loads an OCI image layout tarball or a docker-archive (docker save; optionally gzip'd),
  // verifying every blob; tags from the index's io.containerd.image.name or a full reference in
  // org.opencontainers.image.ref.name (a bare tag there names nothing) / manifest.json's
  // RepoTags. An index is resolved to this node's platform. Returns the images loaded.
  std::vector<Image> load(const std::string& tarPath);
  std::vector<Image> list() const;
  // Untags (a tag ref) or drops a repo digest (a name@digest ref); deletes the image when
  // nothing names it any more, or at once for an id. SHOAL_EBUSY if deleting and a holder uses
  // it and !force; with force a held image loses its names but stays until released, and gc()
  // collects it then. SHOAL_ENOENT if unknown. Disk is freed by gc().
  void remove(const std::string& ref, bool force);
  // Absolute extracted layer dirs, TOP FIRST (overlayfs lowerdir order).
  std::vector<std::string> layerDirs(const Image& image) const;
  // A container uses the image (persisted; idempotent per holder). SHOAL_ENOENT if unknown.
  void acquire(const std::string& imageId, const std::string& holder);
  // Idempotent; unknown images and holders are ignored.
  void release(const std::string& imageId, const std::string& holder);
  struct GcResult {
    size_t images = 0, layers = 0, blobs = 0, partials = 0;
    uint64_t bytes = 0;
  };
  // Deletes images nothing names and nobody holds, then blobs and extracted layers not reachable
  // from any image (never those a pull or load in progress uses), and interrupted downloads
  // not written to for kPartialKeep.
  GcResult gc();
  static constexpr std::chrono::hours kPartialKeep{1};

  const std::string& root() const { return root_; }

 private:
  struct Record {
    Image image;
    std::vector<std::string> blobs;  // manifest, index and config digests kept in blobs/
    std::set<std::string> holders;
  };
  class Pins;
  struct LayerSource;

  Image doPull(const Reference& ref);
  void fetchLayers(const Reference& ref, const std::vector<LayerSource>& layers);
  void fetchLayer(const Reference& ref, const LayerSource& layer);
  void unpackInto(const std::string& blobPath, const std::string& diffId, const std::string& chain,
                  const std::string& what);
  void storeBlob(const std::string& digest, const std::string& bytes);
  Image record(Image image, const std::vector<std::string>& blobs,
               const std::vector<std::string>& tags);
  std::vector<Image> loadOciLayout(const std::string& dir, Pins& pins);
  std::vector<Image> loadDockerArchive(const std::string& dir, Pins& pins);
  Image loadImage(const std::string& dir, const std::string& configBody, const std::string& what,
                  const std::vector<std::string>& layerFiles, const std::string& manifestDigest,
                  const std::vector<std::string>& blobs, uint64_t size,
                  const std::vector<std::string>& tags, Pins& pins);
  bool complete(const Image& image) const;
  std::string layerDir(const std::string& chainId) const;
  std::string blobPath(const std::string& digest) const;

  // Callers hold mutex_.
  Record* resolveLocked(const std::string& ref);
  const Record* resolveLocked(const std::string& ref) const;
  Image viewLocked(const Record& r) const;
  void persistLocked();
  void readIndexLocked();

  const std::string root_, blobs_, layers_, tmp_, partial_, indexPath_;
  const RegistryOptions options_;
  const Platform platform_;
  std::unique_ptr<RegistryClient> registry_;
  int lockFd_ = -1;

  mutable std::mutex mutex_;
  std::map<std::string, Record> images_;                       // GUARDED_BY(mutex_): by id
  std::map<std::string, std::string> tags_;                    // GUARDED_BY(mutex_): tag ref -> id
  std::map<std::string, std::shared_future<Image>> pulls_;     // GUARDED_BY(mutex_): by ref
  std::map<std::string, std::shared_future<void>> unpacking_;  // GUARDED_BY(mutex_): chain id
  std::multiset<std::string> pins_;    // GUARDED_BY(mutex_): chain ids and blob digests in use
                                       // by a pull or load in progress, which gc() keeps
  std::set<std::string> downloading_;  // GUARDED_BY(mutex_): partial/ files being written
};

}  // namespace shoal::runc
