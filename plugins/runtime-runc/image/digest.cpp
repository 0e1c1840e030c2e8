#include "digest.h"

#include <openssl/evp.h>
#include <shoal/plugin.h>
#include <shoal/plugin.hpp>

#include <new>

namespace shoal::runc {

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  if (ctx_ == nullptr || EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr) != 1) {
    EVP_MD_CTX_free(ctx_);
    throw std::bad_alloc();
  }
}

Sha256::~Sha256() { EVP_MD_CTX_free(ctx_); }

void Sha256::update(const void* data, std::size_t size) {
  if (size > 0) EVP_DigestUpdate(ctx_, data, size);
}

std::string Sha256::digest() {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx_, md, &len);
  static const char kHex[] = "0123456789abcdef";
  std::string out = "sha256:";
  for (unsigned int i = 0; i < len; ++i) {
    out += kHex[md[i] >> 4];
    out += kHex[md[i] & 0xf];
  }
  return out;
}

std::string sha256Digest(std::string_view data) {
  Sha256 h;
  h.update(data);
  return h.digest();
}

void checkDigest(const std::string& what, const std::string& expected, const std::string& actual) {
  if (expected != actual) {
    throw sdk::Error(SHOAL_EIO, what + " " + expected + ": digest mismatch (got " + actual + ")");
  }
}

std::vector<std::string> chainIds(const std::vector<std::string>& diffIds) {
  std::vector<std::string> chain;
  chain.reserve(diffIds.size());
  for (const std::string& diff : diffIds) {
    chain.push_back(chain.empty() ? diff : sha256Digest(chain.back() + " " + diff));
  }
  return chain;
}

}  // namespace shoal::runc
