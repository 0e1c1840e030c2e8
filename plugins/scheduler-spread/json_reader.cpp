#include "json_reader.h"

#include <algorithm>

#include "model.h"

namespace shoal::plugins::spread {
namespace {

bool isDigit(char c) { return c >= '0' && c <= '9'; }

int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

void appendUtf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// The length of the well-formed UTF-8 sequence at s[0..n), or 0 (Unicode table 3-7: no
// overlong forms, no surrogates, nothing above U+10FFFF).
size_t utf8Length(const unsigned char* s, size_t n) {
  const unsigned char c = s[0];
  size_t len;
  unsigned char lo = 0x80, hi = 0xBF;  // bounds of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    len = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (n < len || s[1] < lo || s[1] > hi) return 0;
  for (size_t i = 2; i < len; ++i) {
    if (s[i] < 0x80 || s[i] > 0xBF) return 0;
  }
  return len;
}

}  // namespace

void JsonReader::syntax(const char* what) const {
  const size_t at = std::min(pos_, text_.size());
  if (at == text_.size()) what = "unexpected end of input";
  size_t line = 1, column = 1;
  for (size_t i = 0; i < at; ++i) {
    if (text_[i] == '\n') {
      ++line;
      column = 1;
    } else {
      ++column;
    }
  }
  invalid(std::string(doc_) + " is not valid JSON: " + what + " at line " + std::to_string(line) +
          ", column " + std::to_string(column));
}

void JsonReader::skipSpace() {
  while (pos_ < text_.size()) {
    const char c = text_[pos_];
    if (c != ' ' && c != '\n' && c != '\r' && c != '\t') break;
    ++pos_;
  }
}

char JsonReader::next() {
  skipSpace();
  return pos_ < text_.size() ? text_[pos_] : '\0';
}

void JsonReader::expect(char c, const char* what) {
  if (next() != c || pos_ >= text_.size()) syntax(what);
  ++pos_;
}

JsonReader::Kind JsonReader::peek() {
  const char c = next();
  if (pos_ >= text_.size()) syntax("unexpected end of input");
  switch (c) {
    case 'n':
      return Kind::kNull;
    case 't':
    case 'f':
      return Kind::kBool;
    case '"':
      return Kind::kString;
    case '[':
      return Kind::kArray;
    case '{':
      return Kind::kObject;
    default:
      if (c == '-' || isDigit(c)) return Kind::kNumber;
      syntax("expected a value");
  }
}

void JsonReader::readLiteral(std::string_view word) {
  if (text_.substr(pos_, word.size()) != word) syntax("invalid literal");
  pos_ += word.size();
}

void JsonReader::readNull() {
  skipSpace();
  readLiteral("null");
}

bool JsonReader::readBool() {
  if (next() == 't') {
    readLiteral("true");
    return true;
  }
  readLiteral("false");
  return false;
}

JsonReader::Number JsonReader::readNumber() {
  skipSpace();
  Number n;
  size_t p = pos_;
  const size_t size = text_.size();
  if (p < size && text_[p] == '-') {
    n.negative = true;
    ++p;
  }
  if (p >= size || !isDigit(text_[p])) {
    pos_ = p;
    syntax("invalid number");
  }
  if (text_[p] == '0') {
    ++p;
  } else {
    while (p < size && isDigit(text_[p])) {
      const auto d = static_cast<uint64_t>(text_[p] - '0');
      if (n.magnitude > (UINT64_MAX - d) / 10) n.overflow = true;
      n.magnitude = n.magnitude * 10 + d;
      ++p;
    }
  }
  if (p < size && text_[p] == '.') {
    ++p;
    if (p >= size || !isDigit(text_[p])) {
      pos_ = p;
      syntax("invalid number");
    }
    while (p < size && isDigit(text_[p])) ++p;
    n.integer = false;
  }
  if (p < size && (text_[p] == 'e' || text_[p] == 'E')) {
    ++p;
    if (p < size && (text_[p] == '+' || text_[p] == '-')) ++p;
    if (p >= size || !isDigit(text_[p])) {
      pos_ = p;
      syntax("invalid number");
    }
    while (p < size && isDigit(text_[p])) ++p;
    n.integer = false;
  }
  pos_ = p;
  return n;
}

std::string_view JsonReader::readString() {
  skipSpace();
  return readStringInto(valueScratch_);
}

std::string_view JsonReader::readStringInto(std::string& scratch) {
  if (pos_ >= text_.size() || text_[pos_] != '"') syntax("expected a string");
  const size_t start = ++pos_;
  const size_t size = text_.size();
  // Fast path: plain ASCII up to the closing quote is returned as a view into the text.
  while (pos_ < size) {
    const auto c = static_cast<unsigned char>(text_[pos_]);
    if (c == '"') return text_.substr(start, pos_++ - start);
    if (c == '\\' || c < 0x20 || c >= 0x80) break;
    ++pos_;
  }
  scratch.assign(text_.data() + start, pos_ - start);
  for (;;) {
    if (pos_ >= size) syntax("unterminated string");
    const auto c = static_cast<unsigned char>(text_[pos_]);
    if (c == '"') {
      ++pos_;
      return scratch;
    }
    if (c < 0x20) syntax("control character in a string");
    if (c >= 0x80) {
      const size_t len =
          utf8Length(reinterpret_cast<const unsigned char*>(text_.data()) + pos_, size - pos_);
      if (len == 0) syntax("invalid UTF-8 in a string");
      scratch.append(text_.data() + pos_, len);
      pos_ += len;
      continue;
    }
    if (c != '\\') {
      scratch += static_cast<char>(c);
      ++pos_;
      continue;
    }
    if (++pos_ >= size) syntax("unterminated string");
    const char e = text_[pos_++];
    switch (e) {
      case '"':
      case '\\':
      case '/':
        scratch += e;
        break;
      case 'b':
        scratch += '\b';
        break;
      case 'f':
        scratch += '\f';
        break;
      case 'n':
        scratch += '\n';
        break;
      case 'r':
        scratch += '\r';
        break;
      case 't':
        scratch += '\t';
        break;
      case 'u': {
        auto hex4 = [&]() -> uint32_t {
          uint32_t v = 0;
          for (int i = 0; i < 4; ++i) {
            const int h = pos_ < size ? hexValue(text_[pos_]) : -1;
            if (h < 0) syntax("invalid \\u escape");
            v = v * 16 + static_cast<uint32_t>(h);
            ++pos_;
          }
          return v;
        };
        uint32_t cp = hex4();
        if (cp >= 0xDC00 && cp <= 0xDFFF) syntax("unpaired surrogate in a \\u escape");
        if (cp >= 0xD800 && cp <= 0xDBFF) {
          if (text_.substr(pos_, 2) != "\\u") syntax("unpaired surrogate in a \\u escape");
          pos_ += 2;
          const uint32_t low = hex4();
          if (low < 0xDC00 || low > 0xDFFF) syntax("unpaired surrogate in a \\u escape");
          cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
        }
        appendUtf8(scratch, cp);
        break;
      }
      default:
        --pos_;
        syntax("invalid escape in a string");
    }
  }
}

void JsonReader::push(bool object) {
  if (stack_.size() >= kMaxDepth) syntax("nested too deeply");
  stack_.push_back(Level{object, true});
}

void JsonReader::beginObject() {
  expect('{', "expected an object");
  push(true);
}

bool JsonReader::nextMember(std::string_view* name) {
  Level& level = stack_.back();
  char c = next();
  if (c == '}' && pos_ < text_.size()) {
    ++pos_;
    stack_.pop_back();
    return false;
  }
  if (!level.first) {
    if (c != ',' || pos_ >= text_.size()) syntax("expected ',' or '}'");
    ++pos_;
    c = next();
  }
  level.first = false;
  if (c != '"' || pos_ >= text_.size()) syntax("expected a member name");
  *name = readStringInto(nameScratch_);
  expect(':', "expected ':'");
  return true;
}

void JsonReader::beginArray() {
  expect('[', "expected an array");
  push(false);
}

bool JsonReader::nextElement() {
  Level& level = stack_.back();
  const char c = next();
  if (c == ']' && pos_ < text_.size()) {
    ++pos_;
    stack_.pop_back();
    return false;
  }
  if (!level.first) {
    if (c != ',' || pos_ >= text_.size()) syntax("expected ',' or ']'");
    ++pos_;
  }
  level.first = false;
  return true;
}

void JsonReader::skip() {
  switch (peek()) {
    case Kind::kNull:
      readNull();
      return;
    case Kind::kBool:
      readBool();
      return;
    case Kind::kNumber:
      readNumber();
      return;
    case Kind::kString:
      readString();
      return;
    case Kind::kArray:
      beginArray();
      while (nextElement()) skip();
      return;
    case Kind::kObject: {
      beginObject();
      std::string_view name;
      while (nextMember(&name)) skip();
      return;
    }
  }
}

void JsonReader::finish() {
  skipSpace();
  if (pos_ != text_.size()) syntax("unexpected data after the document");
}

}  // namespace shoal::plugins::spread
