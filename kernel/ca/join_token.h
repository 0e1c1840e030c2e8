#pragma once

#include <string>
#include <string_view>

#include "kernel/common/random.h"
#include "kernel/common/status.h"

namespace shoal::ca {

// A join token in Swarm's format: "SWMTKN-1-" + the CA certificate's SHA-256 digest in base
// 36 (50 characters, zero-padded) + "-" + a 25-character secret in [0-9a-z]. The digest lets
// a joining node check the manager's CA before it sends anything; the secret says which role
// it may join as (one secret per role).
struct JoinToken {
  std::string caDigest;  // "sha256:<64 hex>", as RootCa::digest()
  std::string secret;    // 25 characters [0-9a-z]

  std::string toString() const;
};

inline constexpr std::size_t kTokenSecretLength = 25;

// A fresh secret from `random`.
std::string newTokenSecret(Random& random);
// Parses a token. Errors (invalid argument) say what is wrong: the prefix, the version, the
// digest's or the secret's length or characters.
Result<JoinToken> parseJoinToken(std::string_view text);

}  // namespace shoal::ca
