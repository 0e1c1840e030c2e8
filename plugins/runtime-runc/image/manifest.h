// Reading the JSON documents of an image: manifests (Docker v2 schema 2, OCI), indexes
// (Docker manifest lists, OCI indexes) and image configs. Every error is a shoal::sdk::Error
// (SHOAL_EIO: a registry or archive served something we cannot use) prefixed by `what`.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "image_store.h"
#include "reference.h"

namespace shoal::runc {

namespace media {
inline constexpr char kDockerManifest[] = "application/vnd.docker.distribution.manifest.v2+json";
inline constexpr char kDockerList[] = "application/vnd.docker.distribution.manifest.list.v2+json";
inline constexpr char kOciManifest[] = "application/vnd.oci.image.manifest.v1+json";
inline constexpr char kOciIndex[] = "application/vnd.oci.image.index.v1+json";
inline constexpr char kDockerConfig[] = "application/vnd.docker.container.image.v1+json";
inline constexpr char kOciConfig[] = "application/vnd.oci.image.config.v1+json";
// What a manifest request accepts: all four, so a registry never converts or refuses.
std::string acceptHeader();
}  // namespace media

struct Descriptor {
  std::string mediaType, digest;
  int64_t size = -1;  // -1: not given
  Platform platform;  // in an index
  std::map<std::string, std::string> annotations;
};

struct Manifest {
  std::string mediaType;
  Descriptor config;
  std::vector<Descriptor> layers;  // bottom first
};

struct ImageIndex {
  std::string mediaType;
  std::vector<Descriptor> manifests;
};

// True when `body` (served with `contentType`, which may be "") is an index or manifest list;
// false for an image manifest. Refuses schema 1 and anything else.
bool isIndex(const std::string& contentType, const std::string& body, const std::string& what);
Manifest parseManifest(const std::string& body, const std::string& what);
ImageIndex parseIndex(const std::string& body, const std::string& what);
// The entry of `index` for `platform` (an exact variant first, then one without a variant);
// SHOAL_ENOENT listing the platforms there are when none fits.
const Descriptor& selectPlatform(const ImageIndex& index, const Platform& platform,
                                 const std::string& what);

struct ConfigInfo {
  std::vector<std::string> diffIds;
  int64_t createdNs = 0;
  std::string os, architecture;
  ImageConfig config;
};
ConfigInfo parseConfig(const std::string& body, const std::string& what);

// RFC 3339 ("2024-01-02T03:04:05.123456789Z", "...+01:00") as ns since the epoch; 0 if bad.
int64_t parseTimeNs(const std::string& text);

}  // namespace shoal::runc
