// Image references, normalised as Docker normalises them, and the platform this node runs.
#pragma once

#include <string>
#include <string_view>

namespace shoal::runc {

// A parsed, normalised image reference ("alpine" -> docker.io/library/alpine:latest).
struct Reference {
  std::string domain;        // "docker.io", "127.0.0.1:5000", "registry.example.com"
  std::string path;          // "library/busybox"
  std::string tag;           // "latest" when neither tag nor digest was given; "" with digest only
  std::string digest;        // "sha256:<64 hex>" or ""
  std::string name() const;  // domain + "/" + path
  std::string str() const;   // name[:tag][@digest]
  std::string familiar() const;  // as Docker prints: "busybox:latest", "127.0.0.1:5000/busybox:v1"
};

// Parses `text` with Docker's rules (reference.ParseNormalizedNamed plus the default tag):
// a first component with '.' or ':', or "localhost", or an upper-case letter is a registry
// domain, else the domain is docker.io and a single-component path gets "library/";
// "index.docker.io" is docker.io. Throws shoal::sdk::Error(SHOAL_EINVAL) naming the reference
// when it is malformed, not lower-case, a bare 64-hex id, or its digest is not sha256.
Reference parseReference(std::string_view text);

// True when `text` is "sha256:<64 lower-case hex>".
bool isSha256Digest(std::string_view text);

// An OS/architecture/variant as Go and the OCI image index spell them.
struct Platform {
  std::string os, architecture, variant;
  // This node: "linux" and uname's machine in Go's names (x86_64 -> amd64, aarch64 -> arm64
  // variant v8, armv7l -> arm variant v7, ...).
  static Platform host();
  std::string str() const;  // "linux/amd64", "linux/arm/v7"
};

}  // namespace shoal::runc
