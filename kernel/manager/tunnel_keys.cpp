#include "kernel/manager/tunnel_keys.h"

#include <openssl/evp.h>

#include <array>
#include <memory>

namespace shoal::manager {
namespace {

std::string base64(const unsigned char* data, size_t size) {
  std::string out(4 * ((size + 2) / 3), '\0');
  const int n =
      EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), data, static_cast<int>(size));
  out.resize(n < 0 ? 0 : static_cast<size_t>(n));
  return out;
}

}  // namespace

Result<TunnelKey> newTunnelKey() {
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(
      EVP_PKEY_Q_keygen(nullptr, nullptr, "X25519"), &EVP_PKEY_free);
  if (!key) return Status::internal("cannot make an X25519 key pair (OpenSSL)");
  std::array<unsigned char, 32> priv{}, pub{};
  size_t privLen = priv.size(), pubLen = pub.size();
  if (EVP_PKEY_get_raw_private_key(key.get(), priv.data(), &privLen) != 1 ||
      EVP_PKEY_get_raw_public_key(key.get(), pub.data(), &pubLen) != 1 || privLen != 32 ||
      pubLen != 32) {
    return Status::internal("cannot read an X25519 key pair's bytes (OpenSSL)");
  }
  TunnelKey out{base64(priv.data(), priv.size()), base64(pub.data(), pub.size())};
  OPENSSL_cleanse(priv.data(), priv.size());
  return out;
}

}  // namespace shoal::manager
