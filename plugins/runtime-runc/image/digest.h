// sha256 digests as the image store checks them (OpenSSL's EVP).
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

struct evp_md_ctx_st;

namespace shoal::runc {

// An incremental sha256. THREAD: one thread at a time.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(const void* data, std::size_t size);
  void update(std::string_view data) { update(data.data(), data.size()); }
  // "sha256:<64 hex>"; the hasher is finished afterwards.
  std::string digest();

 private:
  evp_md_ctx_st* ctx_;
};

// "sha256:<hex>" of `data`.
std::string sha256Digest(std::string_view data);

// Throws shoal::sdk::Error(SHOAL_EIO) "<what> <expected>: digest mismatch (got <actual>)" when
// `actual` is not `expected`.
void checkDigest(const std::string& what, const std::string& expected, const std::string& actual);

// The OCI chain ids of a stack of diff ids (bottom first): chain[0] = diff[0],
// chain[n] = sha256(chain[n-1] + " " + diff[n]).
std::vector<std::string> chainIds(const std::vector<std::string>& diffIds);

// The hex part of a "sha256:<hex>" digest.
inline std::string digestHex(const std::string& digest) {
  return digest.size() > 7 ? digest.substr(7) : digest;
}

}  // namespace shoal::runc
