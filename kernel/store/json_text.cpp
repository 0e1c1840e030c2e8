#include "kernel/store/json_text.h"

#include <cstdint>
#include <cstdio>

namespace shoal::store {

namespace {

// A recursive-descent recogniser: no values are built, nothing is allocated unless the text
// is bad (then the first problem is recorded and scanning stops).
class JsonScanner {
 public:
  explicit JsonScanner(std::string_view text)
      : begin_(reinterpret_cast<const unsigned char*>(text.data())),
        p_(begin_),
        end_(begin_ + text.size()) {}

  Status checkObject() {
    skipWs();
    if (p_ == end_) return Status::invalidArgument("not a JSON object: the text is empty");
    if (*p_ != '{') return fail("expected '{' (a JSON object)");
    if (!value(0)) return error_;
    skipWs();
    if (p_ != end_) return fail("unexpected text after the JSON object");
    return Status::ok();
  }

 private:
  Status fail(const char* what) {
    char at[48];
    std::snprintf(at, sizeof at, " at byte %zu", static_cast<std::size_t>(p_ - begin_));
    return Status::invalidArgument(std::string("not valid JSON: ") + what + at);
  }
  bool failed(const char* what) {
    error_ = fail(what);
    return false;
  }

  void skipWs() {
    while (p_ != end_ && (*p_ == ' ' || *p_ == '\n' || *p_ == '\r' || *p_ == '\t')) ++p_;
  }

  bool value(int depth) {
    if (p_ == end_) return failed("unexpected end of text, expected a value");
    switch (*p_) {
      case '{':
        return object(depth + 1);
      case '[':
        return array(depth + 1);
      case '"':
        return string();
      case 't':
        return literal("true");
      case 'f':
        return literal("false");
      case 'n':
        return literal("null");
      default:
        if (*p_ == '-' || (*p_ >= '0' && *p_ <= '9')) return number();
        return failed("expected a value");
    }
  }

  bool object(int depth) {
    if (depth > kMaxJsonDepth) return failed("nested too deeply");
    ++p_;  // '{'
    skipWs();
    if (p_ != end_ && *p_ == '}') {
      ++p_;
      return true;
    }
    for (;;) {
      skipWs();
      if (p_ == end_ || *p_ != '"') return failed("expected a member name (a string)");
      if (!string()) return false;
      skipWs();
      if (p_ == end_ || *p_ != ':') return failed("expected ':'");
      ++p_;
      skipWs();
      if (!value(depth)) return false;
      skipWs();
      if (p_ == end_) return failed("unexpected end of text, expected ',' or '}'");
      if (*p_ == ',') {
        ++p_;
        continue;
      }
      if (*p_ == '}') {
        ++p_;
        return true;
      }
      return failed("expected ',' or '}'");
    }
  }

  bool array(int depth) {
    if (depth > kMaxJsonDepth) return failed("nested too deeply");
    ++p_;  // '['
    skipWs();
    if (p_ != end_ && *p_ == ']') {
      ++p_;
      return true;
    }
    for (;;) {
      skipWs();
      if (!value(depth)) return false;
      skipWs();
      if (p_ == end_) return failed("unexpected end of text, expected ',' or ']'");
      if (*p_ == ',') {
        ++p_;
        continue;
      }
      if (*p_ == ']') {
        ++p_;
        return true;
      }
      return failed("expected ',' or ']'");
    }
  }

  static bool isHex(unsigned char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
  }

  bool string() {
    ++p_;  // opening quote
    for (;;) {
      // Plain printable ASCII is by far the common case.
      while (p_ != end_ && *p_ >= 0x20 && *p_ < 0x80 && *p_ != '"' && *p_ != '\\') ++p_;
      if (p_ == end_) return failed("unterminated string");
      unsigned char c = *p_;
      if (c == '"') {
        ++p_;
        return true;
      }
      if (c == '\\') {
        ++p_;
        if (p_ == end_) return failed("unterminated string");
        switch (*p_) {
          case '"':
          case '\\':
          case '/':
          case 'b':
          case 'f':
          case 'n':
          case 'r':
          case 't':
            ++p_;
            break;
          case 'u':
            ++p_;
            for (int i = 0; i < 4; ++i, ++p_) {
              if (p_ == end_ || !isHex(*p_)) return failed("bad \\u escape");
            }
            break;
          default:
            return failed("bad escape in string");
        }
        continue;
      }
      if (c < 0x20) return failed("control character in string");
      if (!utf8()) return false;
    }
  }

  // One multi-byte UTF-8 sequence starting at p_ (RFC 3629: no overlongs, no surrogates).
  bool utf8() {
    unsigned char c = *p_;
    int more;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      more = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
      more = 2;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      more = 3;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return failed("invalid UTF-8 in string");
    }
    ++p_;
    for (int i = 0; i < more; ++i, ++p_) {
      if (p_ == end_ || *p_ < lo || *p_ > hi) return failed("invalid UTF-8 in string");
      lo = 0x80;
      hi = 0xBF;
    }
    return true;
  }

  bool digits() {
    if (p_ == end_ || *p_ < '0' || *p_ > '9') return failed("expected a digit");
    while (p_ != end_ && *p_ >= '0' && *p_ <= '9') ++p_;
    return true;
  }

  bool number() {
    if (*p_ == '-') ++p_;
    if (p_ != end_ && *p_ == '0') {
      ++p_;
    } else if (!digits()) {
      return false;
    }
    if (p_ != end_ && *p_ == '.') {
      ++p_;
      if (!digits()) return false;
    }
    if (p_ != end_ && (*p_ == 'e' || *p_ == 'E')) {
      ++p_;
      if (p_ != end_ && (*p_ == '+' || *p_ == '-')) ++p_;
      if (!digits()) return false;
    }
    return true;
  }

  bool literal(std::string_view word) {
    if (static_cast<std::size_t>(end_ - p_) < word.size() ||
        std::string_view(reinterpret_cast<const char*>(p_), word.size()) != word) {
      return failed("expected a value");
    }
    p_ += word.size();
    return true;
  }

  const unsigned char* begin_;
  const unsigned char* p_;
  const unsigned char* end_;
  Status error_;
};

}  // namespace

Status checkJsonObject(std::string_view text) { return JsonScanner(text).checkObject(); }

bool isCleanText(std::string_view s) {
  auto p = reinterpret_cast<const unsigned char*>(s.data());
  auto end = p + s.size();
  while (p != end) {
    unsigned char c = *p;
    if (c < 0x80) {
      if (c < 0x20 || c == 0x7F) return false;
      ++p;
      continue;
    }
    int more;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      more = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
      more = 2;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      more = 3;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return false;
    }
    ++p;
    for (int i = 0; i < more; ++i, ++p) {
      if (p == end || *p < lo || *p > hi) return false;
      lo = 0x80;
      hi = 0xBF;
    }
  }
  return true;
}

}  // namespace shoal::store
