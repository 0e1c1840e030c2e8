#include "kernel/common/aead.h"

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <memory>

#include "kernel/common/assert.h"

namespace shoal::aead {
namespace {

constexpr int kNonceBytes = 12;
constexpr int kTagBytes = 16;

using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX, decltype(&EVP_CIPHER_CTX_free)>;

const unsigned char* bytes(std::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}

}  // namespace

std::string newKey() {
  std::string key(kKeyBytes, '\0');
  SHOAL_CHECK(RAND_bytes(reinterpret_cast<unsigned char*>(key.data()), kKeyBytes) == 1);
  return key;
}

Result<std::string> seal(std::string_view key, std::string_view plaintext, std::string_view aad) {
  if (key.size() != kKeyBytes) {
    return Status::invalidArgument("an encryption key must be " + std::to_string(kKeyBytes) +
                                   " bytes, not " + std::to_string(key.size()));
  }
  std::string out(kNonceBytes + plaintext.size() + kTagBytes, '\0');
  auto* nonce = reinterpret_cast<unsigned char*>(out.data());
  if (RAND_bytes(nonce, kNonceBytes) != 1) return Status::internal("RAND_bytes failed");
  CipherCtx ctx(EVP_CIPHER_CTX_new(), EVP_CIPHER_CTX_free);
  int len = 0;
  auto* body = nonce + kNonceBytes;
  if (!ctx || EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, bytes(key), nonce) != 1 ||
      (!aad.empty() && EVP_EncryptUpdate(ctx.get(), nullptr, &len, bytes(aad),
                                         static_cast<int>(aad.size())) != 1) ||
      EVP_EncryptUpdate(ctx.get(), body, &len, bytes(plaintext),
                        static_cast<int>(plaintext.size())) != 1 ||
      EVP_EncryptFinal_ex(ctx.get(), body + len, &len) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kTagBytes, body + plaintext.size()) !=
          1) {
    return Status::internal("AES-256-GCM encryption failed");
  }
  return out;
}

Result<std::string> open(std::string_view key, std::string_view sealed, std::string_view aad) {
  if (key.size() != kKeyBytes) {
    return Status::invalidArgument("an encryption key must be " + std::to_string(kKeyBytes) +
                                   " bytes, not " + std::to_string(key.size()));
  }
  if (sealed.size() < kOverheadBytes) {
    return Status::invalidArgument("an encrypted message is at least " +
                                   std::to_string(kOverheadBytes) + " bytes, not " +
                                   std::to_string(sealed.size()));
  }
  const std::size_t n = sealed.size() - kOverheadBytes;
  std::string out(n, '\0');
  auto* plain = reinterpret_cast<unsigned char*>(out.data());
  const unsigned char* nonce = bytes(sealed);
  std::string tag(sealed.substr(kNonceBytes + n));
  CipherCtx ctx(EVP_CIPHER_CTX_new(), EVP_CIPHER_CTX_free);
  int len = 0;
  if (!ctx || EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, bytes(key), nonce) != 1 ||
      (!aad.empty() && EVP_DecryptUpdate(ctx.get(), nullptr, &len, bytes(aad),
                                         static_cast<int>(aad.size())) != 1) ||
      EVP_DecryptUpdate(ctx.get(), plain, &len, nonce + kNonceBytes, static_cast<int>(n)) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, kTagBytes, tag.data()) != 1) {
    return Status::internal("AES-256-GCM decryption failed");
  }
  if (EVP_DecryptFinal_ex(ctx.get(), plain + len, &len) != 1) {
    return Status::permissionDenied(
        "the encrypted data does not authenticate (wrong key, or "
        "it was changed)");
  }
  return out;
}

}  // namespace shoal::aead
