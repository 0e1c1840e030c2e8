#include "kernel/ca/certificate_authority.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <ctime>

namespace shoal::ca {
namespace {

template <class T, void (*Free)(T*)>
struct Deleter {
  void operator()(T* p) const { Free(p); }
};
using KeyPtr = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY, EVP_PKEY_free>>;
using CertPtr = std::unique_ptr<X509, Deleter<X509, X509_free>>;
using ReqPtr = std::unique_ptr<X509_REQ, Deleter<X509_REQ, X509_REQ_free>>;
using BioPtr = std::unique_ptr<BIO, Deleter<BIO, BIO_free_all>>;
using StorePtr = std::unique_ptr<X509_STORE, Deleter<X509_STORE, X509_STORE_free>>;
using StoreCtxPtr = std::unique_ptr<X509_STORE_CTX, Deleter<X509_STORE_CTX, X509_STORE_CTX_free>>;
using BnPtr = std::unique_ptr<BIGNUM, Deleter<BIGNUM, BN_free>>;

// OpenSSL's reason for the last failure (and the error queue cleared).
std::string sslReason() {
  char buf[256] = "";
  unsigned long e = ERR_get_error();
  if (e != 0) ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  return e != 0 ? std::string(": ") + buf : std::string();
}

Status sslError(const std::string& what) { return Status::internal(what + sslReason()); }

BioPtr memBio(const std::string& text) {
  return BioPtr(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
}

std::string bioText(BIO* bio) {
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<std::size_t>(len));
}

Result<KeyPtr> readKey(const std::string& pem) {
  BioPtr bio = memBio(pem);
  KeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (!key) return Status::invalidArgument("the private key is not valid PEM" + sslReason());
  return key;
}

Result<CertPtr> readCert(const std::string& pem) {
  BioPtr bio = memBio(pem);
  CertPtr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) return Status::invalidArgument("the certificate is not valid PEM" + sslReason());
  return cert;
}

// Every certificate in `pem`, in order (at least one).
Result<std::vector<CertPtr>> readCerts(const std::string& pem) {
  BioPtr bio = memBio(pem);
  std::vector<CertPtr> out;
  for (;;) {
    CertPtr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (!cert) break;
    out.push_back(std::move(cert));
  }
  ERR_clear_error();  // the read that ended the loop
  if (out.empty()) return Status::invalidArgument("no certificate in the PEM text");
  return out;
}

Result<std::string> keyToPem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1)
    return sslError("writing a private key");
  return bioText(bio.get());
}

Result<std::string> certToPem(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) return sslError("writing a certificate");
  return bioText(bio.get());
}

std::string nameEntry(X509_NAME* name, int nid) {
  int at = X509_NAME_get_index_by_NID(name, nid, -1);
  if (at < 0) return "";
  ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, at));
  unsigned char* utf8 = nullptr;
  int len = ASN1_STRING_to_UTF8(&utf8, data);
  if (len < 0) return "";
  std::string out(reinterpret_cast<char*>(utf8), static_cast<std::size_t>(len));
  OPENSSL_free(utf8);
  return out;
}

int64_t unixTime(const ASN1_TIME* t) {
  std::tm tm{};
  if (ASN1_TIME_to_tm(t, &tm) != 1) return 0;
  return static_cast<int64_t>(timegm(&tm));
}

Status addName(X509_NAME* name, const char* field, const std::string& value) {
  if (X509_NAME_add_entry_by_txt(name, field, MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(value.c_str()), -1, -1,
                                 0) != 1) {
    return sslError(std::string("setting ") + field + " to \"" + value + "\"");
  }
  return Status::ok();
}

Status addExtension(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  if (ext == nullptr) return sslError(std::string("making extension ") + value);
  const int ok = X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  if (ok != 1) return sslError(std::string("adding extension ") + value);
  return Status::ok();
}

// A random positive 127-bit serial number (RFC 5280: at most 20 octets, unique per CA).
Status setRandomSerial(X509* cert) {
  BnPtr bn(BN_new());
  if (!bn || BN_rand(bn.get(), 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1)
    return sslError("making a serial number");
  if (BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert)) == nullptr)
    return sslError("setting the serial number");
  return Status::ok();
}

}  // namespace

struct RootCa::State {
  CertPtr cert;
  KeyPtr key;  // null: verify only
  std::string certPem;
  std::string keyPem;
  std::string digest;
};

Result<std::string> generateKeyPem() {
  KeyPtr key(EVP_EC_gen("P-256"));
  if (!key) return sslError("generating an ECDSA P-256 key");
  return keyToPem(key.get());
}

Result<std::string> makeCsrPem(const std::string& keyPem) {
  auto key = readKey(keyPem);
  if (!key) return key.status();
  ReqPtr req(X509_REQ_new());
  if (!req || X509_REQ_set_version(req.get(), 0) != 1 ||
      X509_REQ_set_pubkey(req.get(), key->get()) != 1 ||
      X509_REQ_sign(req.get(), key->get(), EVP_sha256()) == 0) {
    return sslError("making a certificate signing request");
  }
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509_REQ(bio.get(), req.get()) != 1)
    return sslError("writing a certificate signing request");
  return bioText(bio.get());
}

Result<CertificateInfo> inspectCertificate(const std::string& certPem) {
  auto cert = readCert(certPem);
  if (!cert) return cert.status();
  X509_NAME* subject = X509_get_subject_name(cert->get());
  CertificateInfo info;
  info.nodeId = nameEntry(subject, NID_commonName);
  info.role = nameEntry(subject, NID_organizationalUnitName);
  info.clusterId = nameEntry(subject, NID_organizationName);
  info.notBefore = unixTime(X509_get0_notBefore(cert->get()));
  info.notAfter = unixTime(X509_get0_notAfter(cert->get()));
  info.isCa = X509_check_ca(cert->get()) != 0;
  return info;
}

bool keyMatchesCertificate(const std::string& keyPem, const std::string& certPem) {
  auto key = readKey(keyPem);
  auto cert = readCert(certPem);
  if (!key || !cert) return false;
  const bool match = X509_check_private_key(cert->get(), key->get()) == 1;
  ERR_clear_error();
  return match;
}

RootCa::RootCa(std::unique_ptr<State> state) : state_(std::move(state)) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  X509_digest(state_->cert.get(), EVP_sha256(), md, &len);
  static const char* kHex = "0123456789abcdef";
  std::string hex;
  for (unsigned int i = 0; i < len; ++i) {
    hex.push_back(kHex[md[i] >> 4]);
    hex.push_back(kHex[md[i] & 0xf]);
  }
  state_->digest = "sha256:" + hex;
}

RootCa::RootCa(RootCa&&) noexcept = default;
RootCa& RootCa::operator=(RootCa&&) noexcept = default;
RootCa::~RootCa() = default;

Result<RootCa> RootCa::create(std::chrono::seconds validity) {
  auto state = std::make_unique<State>();
  state->key.reset(EVP_EC_gen("P-256"));
  if (!state->key) return sslError("generating the CA's ECDSA P-256 key");
  state->cert.reset(X509_new());
  X509* cert = state->cert.get();
  if (cert == nullptr || X509_set_version(cert, 2) != 1) return sslError("making the CA");
  if (Status s = setRandomSerial(cert); !s) return s;
  X509_gmtime_adj(X509_getm_notBefore(cert), -60);
  X509_gmtime_adj(X509_getm_notAfter(cert), static_cast<long>(validity.count()));
  if (X509_set_pubkey(cert, state->key.get()) != 1) return sslError("setting the CA's key");
  X509_NAME* name = X509_get_subject_name(cert);
  if (Status s = addName(name, "CN", "swarm-ca"); !s) return s;
  X509_set_issuer_name(cert, name);
  for (auto [nid, value] : {std::pair{NID_basic_constraints, "critical,CA:TRUE"},
                            std::pair{NID_key_usage, "critical,keyCertSign,cRLSign"},
                            std::pair{NID_subject_key_identifier, "hash"}}) {
    if (Status s = addExtension(cert, cert, nid, value); !s) return s;
  }
  if (X509_sign(cert, state->key.get(), EVP_sha256()) == 0) return sslError("self-signing the CA");
  auto certPem = certToPem(cert);
  if (!certPem) return certPem.status();
  auto keyPem = keyToPem(state->key.get());
  if (!keyPem) return keyPem.status();
  state->certPem = std::move(*certPem);
  state->keyPem = std::move(*keyPem);
  return RootCa(std::move(state));
}

Result<RootCa> RootCa::load(const std::string& certPem, const std::string& keyPem) {
  auto state = std::make_unique<State>();
  auto cert = readCert(certPem);
  if (!cert) return cert.status().withContext("the CA certificate");
  if (X509_check_ca(cert->get()) == 0) {
    return Status::invalidArgument("the CA certificate is not a certificate authority");
  }
  state->cert = std::move(*cert);
  state->certPem = certPem;
  if (!keyPem.empty()) {
    auto key = readKey(keyPem);
    if (!key) return key.status().withContext("the CA key");
    if (X509_check_private_key(state->cert.get(), key->get()) != 1) {
      ERR_clear_error();
      return Status::invalidArgument("the CA key does not belong to the CA certificate");
    }
    state->key = std::move(*key);
    state->keyPem = keyPem;
  }
  return RootCa(std::move(state));
}

const std::string& RootCa::certPem() const { return state_->certPem; }
const std::string& RootCa::keyPem() const { return state_->keyPem; }
bool RootCa::canSign() const { return state_->key != nullptr; }
std::string RootCa::digest() const { return state_->digest; }

Result<std::string> RootCa::sign(const std::string& csrPem, const std::string& nodeId,
                                 std::string_view role, const std::string& clusterId,
                                 std::chrono::seconds validity) const {
  if (!canSign()) return Status::failedPrecondition("this copy of the CA has no key to sign with");
  BioPtr bio = memBio(csrPem);
  ReqPtr req(PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr));
  if (!req)
    return Status::invalidArgument("the certificate request is not valid PEM" + sslReason());
  EVP_PKEY* pub = X509_REQ_get0_pubkey(req.get());
  if (pub == nullptr || X509_REQ_verify(req.get(), pub) != 1) {
    return Status::invalidArgument("the certificate request's signature does not verify" +
                                   sslReason());
  }
  CertPtr cert(X509_new());
  X509* c = cert.get();
  if (c == nullptr || X509_set_version(c, 2) != 1) return sslError("making a certificate");
  if (Status s = setRandomSerial(c); !s) return s;
  X509_gmtime_adj(X509_getm_notBefore(c), -60);
  X509_gmtime_adj(X509_getm_notAfter(c), static_cast<long>(validity.count()));
  if (X509_set_pubkey(c, pub) != 1) return sslError("setting the node's key");
  X509_NAME* name = X509_get_subject_name(c);
  if (Status s = addName(name, "O", clusterId); !s) return s;
  if (Status s = addName(name, "OU", std::string(role)); !s) return s;
  if (Status s = addName(name, "CN", nodeId); !s) return s;
  X509_set_issuer_name(c, X509_get_subject_name(state_->cert.get()));
  for (auto [nid, value] : {std::pair{NID_basic_constraints, "critical,CA:FALSE"},
                            std::pair{NID_key_usage, "critical,digitalSignature"},
                            std::pair{NID_ext_key_usage, "serverAuth,clientAuth"},
                            std::pair{NID_subject_key_identifier, "hash"},
                            std::pair{NID_authority_key_identifier, "keyid:always"}}) {
    if (Status s = addExtension(c, state_->cert.get(), nid, value); !s) return s;
  }
  if (X509_sign(c, state_->key.get(), EVP_sha256()) == 0) return sslError("signing " + nodeId);
  return certToPem(c);
}

Status RootCa::verify(const std::string& certPem) const {
  return verifyChain(state_->certPem, certPem);
}

Result<std::string> RootCa::crossSign(const RootCa& other) const {
  if (!canSign()) return Status::failedPrecondition("this copy of the CA has no key to sign with");
  CertPtr cert(X509_new());
  X509* c = cert.get();
  X509* theirs = other.state_->cert.get();
  if (c == nullptr || X509_set_version(c, 2) != 1) return sslError("making a cross-signed CA");
  if (Status s = setRandomSerial(c); !s) return s;
  if (X509_set1_notBefore(c, X509_get0_notBefore(theirs)) != 1 ||
      X509_set1_notAfter(c, X509_get0_notAfter(theirs)) != 1 ||
      X509_set_pubkey(c, X509_get0_pubkey(theirs)) != 1 ||
      X509_set_subject_name(c, X509_get_subject_name(theirs)) != 1 ||
      X509_set_issuer_name(c, X509_get_subject_name(state_->cert.get())) != 1) {
    return sslError("copying the new CA into its cross-signed certificate");
  }
  for (auto [nid, value] : {std::pair{NID_basic_constraints, "critical,CA:TRUE"},
                            std::pair{NID_key_usage, "critical,keyCertSign,cRLSign"},
                            std::pair{NID_subject_key_identifier, "hash"},
                            std::pair{NID_authority_key_identifier, "keyid:always"}}) {
    if (Status s = addExtension(c, state_->cert.get(), nid, value); !s) return s;
  }
  if (X509_sign(c, state_->key.get(), EVP_sha256()) == 0) return sslError("cross-signing a CA");
  return certToPem(c);
}

Status verifyChain(const std::string& trustPem, const std::string& chainPem) {
  auto roots = readCerts(trustPem);
  if (!roots) return roots.status().withContext("the trusted CAs");
  auto chain = readCerts(chainPem);
  if (!chain) return chain.status().withContext("the certificate");
  StorePtr store(X509_STORE_new());
  StoreCtxPtr ctx(X509_STORE_CTX_new());
  struct StackFree {
    void operator()(STACK_OF(X509) * s) const { sk_X509_free(s); }  // the certs are chain's
  };
  std::unique_ptr<STACK_OF(X509), StackFree> untrusted(sk_X509_new_null());
  if (!store || !ctx || !untrusted) return sslError("preparing to verify a certificate");
  for (const auto& root : *roots) {
    if (X509_STORE_add_cert(store.get(), root.get()) != 1) {
      return sslError("adding a trusted CA");
    }
  }
  for (std::size_t i = 1; i < chain->size(); ++i) sk_X509_push(untrusted.get(), (*chain)[i].get());
  if (X509_STORE_CTX_init(ctx.get(), store.get(), chain->front().get(), untrusted.get()) != 1) {
    return sslError("preparing to verify a certificate");
  }
  if (X509_verify_cert(ctx.get()) != 1) {
    const int err = X509_STORE_CTX_get_error(ctx.get());
    ERR_clear_error();
    return Status::permissionDenied(std::string("the certificate is not valid for this cluster: ") +
                                    X509_verify_cert_error_string(err));
  }
  return Status::ok();
}

std::string firstCertificate(const std::string& pem) {
  constexpr std::string_view kEnd = "-----END CERTIFICATE-----";
  const auto end = pem.find(kEnd);
  if (end == std::string::npos) return pem;
  return pem.substr(0, end + kEnd.size()) + "\n";
}

}  // namespace shoal::ca
