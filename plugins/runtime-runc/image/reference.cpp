#include "reference.h"

#include <shoal/plugin.h>
#include <sys/utsname.h>
#include <shoal/plugin.hpp>

#include <string>

namespace shoal::runc {

namespace {

// The grammar of github.com/distribution/reference (regexp.go), written out by hand: GCC 12's
// <regex> trips -Wmaybe-uninitialized in sanitizer builds.
bool isLowerAlnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
bool isAlnum(char c) { return isLowerAlnum(c) || (c >= 'A' && c <= 'Z'); }
bool isDigit(char c) { return c >= '0' && c <= '9'; }
bool isHexDigit(char c) { return isDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

// [a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*
bool isPathComponent(const std::string& s) {
  std::size_t i = 0, n = s.size();
  while (true) {
    std::size_t start = i;
    while (i < n && isLowerAlnum(s[i])) ++i;
    if (i == start) return false;
    if (i == n) return true;
    std::size_t sep = i;
    while (i < n && !isLowerAlnum(s[i])) ++i;
    std::string separator = s.substr(sep, i - sep);
    bool dashes = separator.find_first_not_of('-') == std::string::npos;
    if (!(separator == "." || separator == "_" || separator == "__" || dashes)) return false;
  }
}

bool isPort(const std::string& s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!isDigit(c)) return false;
  }
  return true;
}

// (host | \[ipv6\])(:port)?, host = component(\.component)*,
// component = [a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]
bool isDomain(const std::string& s) {
  if (!s.empty() && s[0] == '[') {
    auto close = s.find(']');
    if (close == std::string::npos || close == 1) return false;
    for (std::size_t i = 1; i < close; ++i) {
      if (!isHexDigit(s[i]) && s[i] != ':') return false;
    }
    std::string rest = s.substr(close + 1);
    return rest.empty() || (rest[0] == ':' && isPort(rest.substr(1)));
  }
  std::string host = s;
  if (auto colon = host.find(':'); colon != std::string::npos) {
    if (!isPort(host.substr(colon + 1))) return false;
    host.resize(colon);
  }
  std::size_t begin = 0;
  while (true) {
    auto end = host.find('.', begin);
    std::string c = host.substr(begin, end == std::string::npos ? std::string::npos : end - begin);
    if (c.empty() || !isAlnum(c.front()) || !isAlnum(c.back())) return false;
    for (char ch : c) {
      if (!isAlnum(ch) && ch != '-') return false;
    }
    if (end == std::string::npos) return true;
    begin = end + 1;
  }
}

// [\w][\w.-]{0,127}
bool isTag(const std::string& s) {
  if (s.empty() || s.size() > 128) return false;
  if (!isAlnum(s[0]) && s[0] != '_') return false;
  for (char c : s) {
    if (!isAlnum(c) && c != '_' && c != '.' && c != '-') return false;
  }
  return true;
}

// [A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][[:xdigit:]]{32,}
bool isDigestFormat(const std::string& s) {
  auto colon = s.find(':');
  if (colon == std::string::npos || colon == 0) return false;
  bool needLetter = true;
  for (std::size_t i = 0; i < colon; ++i) {
    char c = s[i];
    bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    if (needLetter) {
      if (!letter) return false;
      needLetter = false;
    } else if (c == '-' || c == '_' || c == '+' || c == '.') {
      needLetter = true;
    } else if (!isAlnum(c)) {
      return false;
    }
  }
  if (needLetter || s.size() - colon - 1 < 32) return false;
  for (std::size_t i = colon + 1; i < s.size(); ++i) {
    if (!isHexDigit(s[i])) return false;
  }
  return true;
}

[[noreturn]] void invalid(std::string_view text, const std::string& why) {
  throw sdk::Error(SHOAL_EINVAL, "invalid reference \"" + std::string(text) + "\": " + why);
}

bool isHex64(std::string_view s) {
  if (s.size() != 64) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

constexpr char kDockerHub[] = "docker.io";

}  // namespace

bool isSha256Digest(std::string_view text) {
  return text.size() == 71 && text.substr(0, 7) == "sha256:" && isHex64(text.substr(7));
}

std::string Reference::name() const { return domain + "/" + path; }

std::string Reference::str() const {
  std::string s = name();
  if (!tag.empty()) s += ":" + tag;
  if (!digest.empty()) s += "@" + digest;
  return s;
}

std::string Reference::familiar() const {
  std::string s;
  if (domain == kDockerHub) {
    s = path;
    if (s.rfind("library/", 0) == 0 && s.find('/', 8) == std::string::npos) s = s.substr(8);
  } else {
    s = name();
  }
  if (!tag.empty()) s += ":" + tag;
  if (!digest.empty()) s += "@" + digest;
  return s;
}

Reference parseReference(std::string_view text) {
  if (text.empty()) invalid(text, "empty reference");
  if (text.size() > 4096) invalid(text.substr(0, 64), "reference too long");
  std::string rest(text);
  Reference ref;

  // name[:tag][@digest]
  if (auto at = rest.find('@'); at != std::string::npos) {
    ref.digest = rest.substr(at + 1);
    rest.resize(at);
    if (!isDigestFormat(ref.digest)) invalid(text, "invalid digest format");
    if (ref.digest.rfind("sha256:", 0) != 0) {
      invalid(text, "unsupported digest algorithm (only sha256)");
    }
    if (!isSha256Digest(ref.digest)) invalid(text, "invalid sha256 digest");
  }
  if (auto colon = rest.rfind(':');
      colon != std::string::npos && rest.find('/', colon) == std::string::npos) {
    ref.tag = rest.substr(colon + 1);
    rest.resize(colon);
    if (!isTag(ref.tag)) invalid(text, "invalid tag format");
  }
  if (rest.empty()) invalid(text, "invalid reference format");
  if (isHex64(text)) {
    invalid(text, "cannot specify 64-byte hexadecimal strings as a repository name");
  }

  // Docker's splitDockerDomain.
  std::string remainder;
  auto slash = rest.find('/');
  if (slash == std::string::npos) {
    ref.domain = kDockerHub;
    remainder = rest;
  } else {
    std::string first = rest.substr(0, slash);
    bool lower = true;
    for (char c : first) lower = lower && !(c >= 'A' && c <= 'Z');
    if (first.find_first_of(".:") == std::string::npos && first != "localhost" && lower) {
      ref.domain = kDockerHub;
      remainder = rest;
    } else {
      ref.domain = first;
      remainder = rest.substr(slash + 1);
    }
  }
  if (ref.domain == "index.docker.io") ref.domain = kDockerHub;
  if (!isDomain(ref.domain)) invalid(text, "invalid registry domain");
  if (remainder.empty()) invalid(text, "invalid reference format");
  for (char c : remainder) {
    if (c >= 'A' && c <= 'Z') invalid(text, "repository name must be lowercase");
  }
  std::string::size_type begin = 0;
  while (true) {
    auto end = remainder.find('/', begin);
    std::string component =
        remainder.substr(begin, end == std::string::npos ? std::string::npos : end - begin);
    if (!isPathComponent(component)) invalid(text, "invalid reference format");
    if (end == std::string::npos) break;
    begin = end + 1;
  }
  if (ref.domain == kDockerHub && remainder.find('/') == std::string::npos) {
    remainder = "library/" + remainder;
  }
  ref.path = remainder;
  if (ref.name().size() > 255)
    invalid(text, "repository name must not be more than 255 characters");
  if (ref.tag.empty() && ref.digest.empty()) ref.tag = "latest";
  return ref;
}

Platform Platform::host() {
  Platform p;
  p.os = "linux";
  struct utsname uts {};
  std::string machine = uname(&uts) == 0 ? uts.machine : "";
  if (machine == "x86_64" || machine == "amd64") {
    p.architecture = "amd64";
  } else if (machine == "aarch64" || machine == "arm64") {
    p.architecture = "arm64";
    p.variant = "v8";
  } else if (machine.rfind("armv7", 0) == 0) {
    p.architecture = "arm";
    p.variant = "v7";
  } else if (machine.rfind("armv6", 0) == 0) {
    p.architecture = "arm";
    p.variant = "v6";
  } else if (machine.size() == 4 && machine[0] == 'i' && machine.substr(2) == "86") {
    p.architecture = "386";
  } else {
    p.architecture = machine;  // ppc64le, s390x, riscv64 are spelled the same
  }
  return p;
}

std::string Platform::str() const {
  return os + "/" + architecture + (variant.empty() ? "" : "/" + variant);
}

}  // namespace shoal::runc
