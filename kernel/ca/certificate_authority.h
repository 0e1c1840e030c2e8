#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "kernel/common/status.h"

namespace shoal::ca {

// The organisational units that carry a node's role in its certificate, as in Swarm.
inline constexpr std::string_view kManagerRole = "swarm-manager";
inline constexpr std::string_view kWorkerRole = "swarm-worker";

// What a node certificate says: CN = node id, OU = role, O = cluster id.
struct CertificateInfo {
  std::string nodeId;
  std::string role;  // kManagerRole or kWorkerRole (or whatever the certificate holds)
  std::string clusterId;
  int64_t notBefore = 0;  // Unix seconds
  int64_t notAfter = 0;
  bool isCa = false;
};

// A new ECDSA P-256 private key, as PKCS#8 PEM.
Result<std::string> generateKeyPem();
// A certificate signing request for `keyPem` (its subject is left to the CA), as PEM.
Result<std::string> makeCsrPem(const std::string& keyPem);
// Reads a certificate. Errors: invalid argument naming what is wrong with the PEM.
Result<CertificateInfo> inspectCertificate(const std::string& certPem);
// True when `certPem`'s public key is the one of `keyPem`.
bool keyMatchesCertificate(const std::string& keyPem, const std::string& certPem);

// The cluster's root certificate authority (ECDSA P-256, CN "swarm-ca", like Swarm's): it
// signs every node's certificate; its digest is the first half of the join tokens. A RootCa
// loaded without its key can verify but not sign (a worker's copy).
//
// THREAD: const methods are safe from any thread. Errors name what failed (and OpenSSL's
// reason); nothing throws.
class RootCa {
 public:
  // A new self-signed root valid for `validity` (Swarm: 20 years).
  static Result<RootCa> create(std::chrono::seconds validity = std::chrono::hours(24 * 365 * 20));
  // From PEM text; `keyPem` may be empty. Refuses a certificate that is not a CA, or a key
  // that does not match it.
  static Result<RootCa> load(const std::string& certPem, const std::string& keyPem);

  RootCa(RootCa&&) noexcept;
  RootCa& operator=(RootCa&&) noexcept;
  ~RootCa();

  const std::string& certPem() const;
  const std::string& keyPem() const;  // empty when loaded without it
  bool canSign() const;
  // "sha256:<64 hex>" over the certificate's DER encoding.
  std::string digest() const;

  // Signs `csrPem` (whose own signature must verify) as node `nodeId` with `role`, in
  // cluster `clusterId`, valid from a minute ago until `validity` from now; the subject comes from
  // these arguments, never from the request. Client and server use.
  Result<std::string> sign(const std::string& csrPem, const std::string& nodeId,
                           std::string_view role, const std::string& clusterId,
                           std::chrono::seconds validity) const;
  // Checks that `certPem` (a certificate, then any intermediates) chains to this CA and is
  // valid now. Errors: permission denied with OpenSSL's reason ("certificate has expired",
  // "unable to get local issuer ...").
  Status verify(const std::string& certPem) const;
  // A certificate for `other` (its subject and key, CA:TRUE) issued by this CA: during a root
  // rotation, certificates `other` signs then chain to this one too, through it.
  Result<std::string> crossSign(const RootCa& other) const;

 private:
  struct State;
  explicit RootCa(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

// Checks `chainPem` (a certificate, then any intermediates) against the roots in `trustPem`
// (one or more CA certificates). Errors as RootCa::verify.
Status verifyChain(const std::string& trustPem, const std::string& chainPem);

// The first certificate of a PEM bundle (the whole text when it has none).
std::string firstCertificate(const std::string& pem);

}  // namespace shoal::ca
