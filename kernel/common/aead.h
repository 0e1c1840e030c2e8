#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "kernel/common/status.h"

namespace shoal::aead {

// Authenticated encryption for data at rest: AES-256-GCM (OpenSSL), a fresh random 96-bit
// nonce per message. A sealed message is nonce (12 bytes) || ciphertext || tag (16 bytes);
// `aad` is authenticated but not stored (say, the key a record is stored under, so a sealed
// value moved to another key no longer opens).
// THREAD: every function is safe from any thread.

inline constexpr std::size_t kKeyBytes = 32;
inline constexpr std::size_t kOverheadBytes = 12 + 16;

// A new random key (kKeyBytes) from OpenSSL's CSPRNG.
std::string newKey();

// Errors: invalid argument for a key that is not kKeyBytes long; internal if OpenSSL fails.
Result<std::string> seal(std::string_view key, std::string_view plaintext,
                         std::string_view aad = {});
// Errors: permission denied when the message does not authenticate (a wrong key, or a
// changed byte); invalid argument for a wrong-sized key or a message too short to be one.
Result<std::string> open(std::string_view key, std::string_view sealed, std::string_view aad = {});

}  // namespace shoal::aead
