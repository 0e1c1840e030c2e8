#include "kernel/ca/join_token.h"

#include <array>
#include <vector>

namespace shoal::ca {
namespace {

constexpr std::string_view kPrefix = "SWMTKN";
constexpr std::string_view kVersion = "1";
constexpr std::size_t kDigestChars = 50;  // ceil(256 / log2(36))
constexpr const char* kBase36 = "0123456789abcdefghijklmnopqrstuvwxyz";

int base36Value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'z') return c - 'a' + 10;
  return -1;
}

int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// 32 big-endian bytes -> 50 base-36 digits (schoolbook division, most significant first).
std::string toBase36(std::array<uint8_t, 32> n) {
  std::string out(kDigestChars, '0');
  for (std::size_t pos = kDigestChars; pos-- > 0;) {
    unsigned rem = 0;
    for (uint8_t& byte : n) {
      unsigned cur = (rem << 8) | byte;
      byte = static_cast<uint8_t>(cur / 36);
      rem = cur % 36;
    }
    out[pos] = kBase36[rem];
  }
  return out;
}

// 50 base-36 digits -> 32 big-endian bytes, or false when it does not fit in 256 bits.
bool fromBase36(std::string_view digits, std::array<uint8_t, 32>& n) {
  n.fill(0);
  for (char c : digits) {
    unsigned carry = static_cast<unsigned>(base36Value(c));
    for (std::size_t i = n.size(); i-- > 0;) {
      unsigned cur = n[i] * 36u + carry;
      n[i] = static_cast<uint8_t>(cur & 0xff);
      carry = cur >> 8;
    }
    if (carry != 0) return false;
  }
  return true;
}

}  // namespace

std::string JoinToken::toString() const {
  std::array<uint8_t, 32> n{};
  std::string_view hex = caDigest;
  if (hex.starts_with("sha256:")) hex.remove_prefix(7);
  for (std::size_t i = 0; i < n.size() && 2 * i + 1 < hex.size(); ++i) {
    n[i] = static_cast<uint8_t>(hexValue(hex[2 * i]) * 16 + hexValue(hex[2 * i + 1]));
  }
  return std::string(kPrefix) + "-" + std::string(kVersion) + "-" + toBase36(n) + "-" + secret;
}

std::string newTokenSecret(Random& random) {
  std::string out;
  for (std::size_t i = 0; i < kTokenSecretLength; ++i) out.push_back(kBase36[random.uniform(36)]);
  return out;
}

Result<JoinToken> parseJoinToken(std::string_view text) {
  std::vector<std::string_view> parts;
  std::size_t at = 0;
  while (true) {
    auto dash = text.find('-', at);
    parts.push_back(text.substr(at, dash == std::string_view::npos ? dash : dash - at));
    if (dash == std::string_view::npos) break;
    at = dash + 1;
  }
  const std::string bad = "invalid join token";
  if (parts.size() != 4 || parts[0] != kPrefix) {
    return Status::invalidArgument(bad + ": it must look like SWMTKN-1-<digest>-<secret>");
  }
  if (parts[1] != kVersion) {
    return Status::invalidArgument(bad + ": version \"" + std::string(parts[1]) +
                                   "\" is not supported (only 1)");
  }
  auto allBase36 = [](std::string_view s) {
    for (char c : s) {
      if (base36Value(c) < 0) return false;
    }
    return true;
  };
  if (parts[2].size() != kDigestChars || !allBase36(parts[2])) {
    return Status::invalidArgument(bad + ": the CA digest must be " + std::to_string(kDigestChars) +
                                   " characters of [0-9a-z], got \"" + std::string(parts[2]) +
                                   "\"");
  }
  if (parts[3].size() != kTokenSecretLength || !allBase36(parts[3])) {
    return Status::invalidArgument(bad + ": the secret must be " +
                                   std::to_string(kTokenSecretLength) + " characters of [0-9a-z]");
  }
  std::array<uint8_t, 32> n{};
  if (!fromBase36(parts[2], n)) {
    return Status::invalidArgument(bad + ": the CA digest is out of range");
  }
  static const char* kHex = "0123456789abcdef";
  JoinToken t;
  t.caDigest = "sha256:";
  for (uint8_t b : n) {
    t.caDigest.push_back(kHex[b >> 4]);
    t.caDigest.push_back(kHex[b & 0xf]);
  }
  t.secret = std::string(parts[3]);
  return t;
}

}  // namespace shoal::ca
