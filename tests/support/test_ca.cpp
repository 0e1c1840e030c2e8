#include "tests/support/test_ca.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <atomic>
#include <stdexcept>

namespace shoal::test {
namespace {

[[noreturn]] void fail(const std::string& what) {
  char buf[256] = "";
  unsigned long e = ERR_get_error();
  if (e != 0) ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  throw std::runtime_error("test CA: " + what + ": " + buf);
}

struct KeyDeleter {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct CertDeleter {
  void operator()(X509* c) const { X509_free(c); }
};
struct BioDeleter {
  void operator()(BIO* b) const { BIO_free(b); }
};
using KeyPtr = std::unique_ptr<EVP_PKEY, KeyDeleter>;
using CertPtr = std::unique_ptr<X509, CertDeleter>;
using BioPtr = std::unique_ptr<BIO, BioDeleter>;

KeyPtr newKey() {
  KeyPtr key(EVP_EC_gen("P-256"));
  if (!key) fail("generating a P-256 key");
  return key;
}

void addExtension(X509* cert, X509V3_CTX* ctx, int nid, const char* value) {
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, ctx, nid, value);
  if (ext == nullptr) fail(std::string("extension ") + value);
  int ok = X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  if (ok != 1) fail(std::string("adding extension ") + value);
}

// A certificate for `key` named `commonName`, signed by `issuerKey` (self-signed when
// `issuer` is null).
CertPtr makeCert(EVP_PKEY* key, const std::string& commonName, X509* issuer, EVP_PKEY* issuerKey,
                 bool ca) {
  static std::atomic<long> serial{1};
  CertPtr cert(X509_new());
  if (!cert) fail("X509_new");
  X509_set_version(cert.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), serial++);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 24 * 3600);
  if (X509_set_pubkey(cert.get(), key) != 1) fail("X509_set_pubkey");
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("shoal-test"), -1, -1, 0);
  if (X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                 reinterpret_cast<const unsigned char*>(commonName.c_str()), -1, -1,
                                 0) != 1) {
    fail("setting CN " + commonName);
  }
  X509_set_issuer_name(cert.get(), issuer != nullptr ? X509_get_subject_name(issuer) : name);

  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer != nullptr ? issuer : cert.get(), cert.get(), nullptr, nullptr, 0);
  if (ca) {
    addExtension(cert.get(), &ctx, NID_basic_constraints, "critical,CA:TRUE");
    addExtension(cert.get(), &ctx, NID_key_usage, "critical,keyCertSign,cRLSign");
    addExtension(cert.get(), &ctx, NID_subject_key_identifier, "hash");
  } else {
    addExtension(cert.get(), &ctx, NID_basic_constraints, "critical,CA:FALSE");
    addExtension(cert.get(), &ctx, NID_key_usage, "critical,digitalSignature");
    addExtension(cert.get(), &ctx, NID_ext_key_usage, "serverAuth,clientAuth");
    addExtension(cert.get(), &ctx, NID_subject_key_identifier, "hash");
    addExtension(cert.get(), &ctx, NID_authority_key_identifier, "keyid:always");
  }
  if (X509_sign(cert.get(), issuerKey, EVP_sha256()) == 0) fail("signing " + commonName);
  return cert;
}

std::string bioText(BIO* bio) {
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<size_t>(len));
}

std::string certToPem(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) fail("writing a certificate");
  return bioText(bio.get());
}

std::string keyToPem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio ||
      PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    fail("writing a key");
  }
  return bioText(bio.get());
}

}  // namespace

struct TestCa::State {
  KeyPtr key;
  CertPtr cert;
  std::string pem;
};

TestCa::TestCa(const std::string& commonName) : state_(std::make_unique<State>()) {
  state_->key = newKey();
  state_->cert = makeCert(state_->key.get(), commonName, nullptr, state_->key.get(), true);
  state_->pem = certToPem(state_->cert.get());
}

TestCa::~TestCa() = default;

const std::string& TestCa::certPem() const { return state_->pem; }

TestCredentials TestCa::issue(const std::string& commonName) const {
  KeyPtr key = newKey();
  CertPtr cert =
      makeCert(key.get(), commonName, state_->cert.get(), state_->key.get(), /*ca=*/false);
  return TestCredentials{certToPem(cert.get()), keyToPem(key.get())};
}

}  // namespace shoal::test
