#include "kernel/agent/wire.h"

#include <charconv>

namespace shoal::agent::wire {
namespace {

constexpr std::size_t kNpos = std::string_view::npos;
constexpr int kMaxDepth = 64;

bool isSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// One past the closing quote of the string literal starting at s[at] (a quote), or npos.
std::size_t skipString(std::string_view s, std::size_t at) {
  for (std::size_t i = at + 1; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '"') return i + 1;
    if (c == '\\') {
      ++i;  // the escaped character (\uXXXX: its hex digits are plain characters)
    } else if (static_cast<unsigned char>(c) < 0x20) {
      return kNpos;
    }
  }
  return kNpos;
}

std::size_t skipAt(std::string_view s, std::size_t at, int depth) {
  std::size_t i = skipSpace(s, at);
  if (i >= s.size() || depth > kMaxDepth) return kNpos;
  const char c = s[i];
  if (c == '"') return skipString(s, i);
  if (c == '{' || c == '[') {
    const char close = c == '{' ? '}' : ']';
    i = skipSpace(s, i + 1);
    if (i < s.size() && s[i] == close) return i + 1;
    for (;;) {
      if (c == '{') {
        if (i >= s.size() || s[i] != '"') return kNpos;
        i = skipString(s, i);
        if (i == kNpos) return kNpos;
        i = skipSpace(s, i);
        if (i >= s.size() || s[i] != ':') return kNpos;
        ++i;
      }
      i = skipAt(s, i, depth + 1);
      if (i == kNpos) return kNpos;
      i = skipSpace(s, i);
      if (i >= s.size()) return kNpos;
      if (s[i] == close) return i + 1;
      if (s[i] != ',') return kNpos;
      i = skipSpace(s, i + 1);
    }
  }
  // A number or a literal: its characters.
  const std::size_t start = i;
  while (i < s.size()) {
    const char d = s[i];
    const bool numberChar =
        (d >= '0' && d <= '9') || d == '-' || d == '+' || d == '.' || d == 'e' || d == 'E';
    const bool letter = d >= 'a' && d <= 'z';
    if (!numberChar && !letter) break;
    ++i;
  }
  return i == start ? kNpos : i;
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

std::optional<uint32_t> hex4(std::string_view s, std::size_t at) {
  if (at + 4 > s.size()) return std::nullopt;
  uint32_t v = 0;
  for (std::size_t k = at; k < at + 4; ++k) {
    const char c = s[k];
    v <<= 4;
    if (c >= '0' && c <= '9') {
      v |= static_cast<uint32_t>(c - '0');
    } else if (c >= 'a' && c <= 'f') {
      v |= static_cast<uint32_t>(c - 'a' + 10);
    } else if (c >= 'A' && c <= 'F') {
      v |= static_cast<uint32_t>(c - 'A' + 10);
    } else {
      return std::nullopt;
    }
  }
  return v;
}

}  // namespace

std::size_t skipSpace(std::string_view s, std::size_t at) {
  while (at < s.size() && isSpace(s[at])) ++at;
  return at;
}

std::size_t skipValue(std::string_view s, std::size_t at) { return skipAt(s, at, 0); }

std::optional<std::string_view> member(std::string_view object, std::string_view key) {
  std::size_t i = skipSpace(object, 0);
  if (i >= object.size() || object[i] != '{') return std::nullopt;
  i = skipSpace(object, i + 1);
  if (i < object.size() && object[i] == '}') return std::nullopt;
  for (;;) {
    if (i >= object.size() || object[i] != '"') return std::nullopt;
    const std::size_t keyEnd = skipString(object, i);
    if (keyEnd == kNpos) return std::nullopt;
    const std::string_view name = object.substr(i + 1, keyEnd - i - 2);
    i = skipSpace(object, keyEnd);
    if (i >= object.size() || object[i] != ':') return std::nullopt;
    const std::size_t start = skipSpace(object, i + 1);
    const std::size_t end = skipValue(object, start);
    if (end == kNpos) return std::nullopt;
    if (name == key) return object.substr(start, end - start);
    i = skipSpace(object, end);
    if (i >= object.size() || object[i] != ',') return std::nullopt;
    i = skipSpace(object, i + 1);
  }
}

std::optional<std::string> stringOf(std::string_view raw) {
  if (raw.size() < 2 || raw.front() != '"' || skipString(raw, 0) != raw.size()) {
    return std::nullopt;
  }
  std::string out;
  out.reserve(raw.size() - 2);
  for (std::size_t i = 1; i + 1 < raw.size(); ++i) {
    const char c = raw[i];
    if (c != '\\') {
      out += c;
      continue;
    }
    const char e = raw[++i];
    switch (e) {
      case '"':
      case '\\':
      case '/':
        out += e;
        break;
      case 'b':
        out += '\b';
        break;
      case 'f':
        out += '\f';
        break;
      case 'n':
        out += '\n';
        break;
      case 'r':
        out += '\r';
        break;
      case 't':
        out += '\t';
        break;
      case 'u': {
        auto cp = hex4(raw, i + 1);
        if (!cp) return std::nullopt;
        i += 4;
        if (*cp >= 0xD800 && *cp < 0xDC00 && i + 6 < raw.size() && raw[i + 1] == '\\' &&
            raw[i + 2] == 'u') {
          auto low = hex4(raw, i + 3);
          if (low && *low >= 0xDC00 && *low < 0xE000) {
            cp = 0x10000 + ((*cp - 0xD800) << 10) + (*low - 0xDC00);
            i += 6;
          }
        }
        appendUtf8(out, *cp);
        break;
      }
      default:
        return std::nullopt;
    }
  }
  return out;
}

std::optional<int64_t> intOf(std::string_view raw) {
  int64_t v = 0;
  const char* begin = raw.data();
  const char* end = raw.data() + raw.size();
  auto r = std::from_chars(begin, end, v);
  if (r.ec != std::errc() || r.ptr != end) return std::nullopt;
  return v;
}

std::optional<bool> boolOf(std::string_view raw) {
  if (raw == "true") return true;
  if (raw == "false") return false;
  return std::nullopt;
}

std::string stringMember(std::string_view object, std::string_view key,
                         const std::string& fallback) {
  auto raw = member(object, key);
  if (!raw) return fallback;
  auto s = stringOf(*raw);
  return s ? *s : fallback;
}

int64_t intMember(std::string_view object, std::string_view key, int64_t fallback) {
  auto raw = member(object, key);
  if (!raw) return fallback;
  auto v = intOf(*raw);
  return v ? *v : fallback;
}

bool boolMember(std::string_view object, std::string_view key, bool fallback) {
  auto raw = member(object, key);
  if (!raw) return fallback;
  auto v = boolOf(*raw);
  return v ? *v : fallback;
}

}  // namespace shoal::agent::wire
