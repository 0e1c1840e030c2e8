#pragma once

#include <string>

#include "kernel/common/status.h"

namespace shoal::manager {

// A WireGuard key pair (Curve25519, through OpenSSL's X25519), each half as base64 of its 32
// bytes, the form wg(8) and the network plugin's peers documents use.
struct TunnelKey {
  std::string privateKey;
  std::string publicKey;
};
Result<TunnelKey> newTunnelKey();

}  // namespace shoal::manager
