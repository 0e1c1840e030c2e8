#pragma once

#include <memory>
#include <string>

namespace shoal::test {

// A certificate and its private key, as PEM text.
struct TestCredentials {
  std::string certPem;
  std::string keyPem;
};

// A throwaway certificate authority made at test time with OpenSSL's C API: an ECDSA P-256
// self-signed root (valid from an hour ago for a day) that issues P-256 leaf certificates for
// both TLS client and server use. Tests of mutual TLS use two unrelated instances, one of them
// the "wrong" CA. Failures throw std::runtime_error (tests only).
class TestCa {
 public:
  // `commonName` is the root's subject CN; two CAs may share it (their keys still differ).
  explicit TestCa(const std::string& commonName);
  ~TestCa();
  TestCa(const TestCa&) = delete;
  TestCa& operator=(const TestCa&) = delete;

  // The root certificate (PEM), to be trusted by peers.
  const std::string& certPem() const;
  // A new key and a certificate for it with subject CN `commonName`, signed by this CA.
  TestCredentials issue(const std::string& commonName) const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace shoal::test
