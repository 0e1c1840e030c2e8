#include "state_files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

namespace shoal::runc {
namespace {

class FlatParser {
 public:
  explicit FlatParser(std::string_view text) : t_(text) {}

  bool parse(FlatObject& out) {
    space();
    if (!eat('{')) return false;
    space();
    if (eat('}')) return end();
    while (true) {
      space();
      std::string key;
      if (!string(key)) return false;
      space();
      if (!eat(':')) return false;
      space();
      FlatValue v;
      if (!value(v)) return false;
      out.emplace_back(std::move(key), std::move(v));
      space();
      if (eat(',')) continue;
      if (eat('}')) return end();
      return false;
    }
  }

 private:
  bool end() {
    space();
    return p_ == t_.size();
  }
  void space() {
    while (p_ < t_.size() && (t_[p_] == ' ' || t_[p_] == '\t' || t_[p_] == '\n' || t_[p_] == '\r'))
      ++p_;
  }
  bool eat(char c) {
    if (p_ < t_.size() && t_[p_] == c) {
      ++p_;
      return true;
    }
    return false;
  }
  bool literal(std::string_view word) {
    if (t_.substr(p_, word.size()) != word) return false;
    p_ += word.size();
    return true;
  }
  bool hex4(uint32_t& out) {
    if (p_ + 4 > t_.size()) return false;
    out = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = t_[p_++];
      out <<= 4;
      if (c >= '0' && c <= '9') {
        out |= static_cast<uint32_t>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        out |= static_cast<uint32_t>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        out |= static_cast<uint32_t>(c - 'A' + 10);
      } else {
        return false;
      }
    }
    return true;
  }
  static void utf8(std::string& out, uint32_t cp) {
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
  bool string(std::string& out) {
    if (!eat('"')) return false;
    while (p_ < t_.size()) {
      const char c = t_[p_++];
      if (c == '"') return true;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (p_ >= t_.size()) return false;
      const char e = t_[p_++];
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
          uint32_t cp = 0;
          if (!hex4(cp)) return false;
          if (cp >= 0xD800 && cp < 0xDC00 && t_.substr(p_, 2) == "\\u") {
            p_ += 2;
            uint32_t low = 0;
            if (!hex4(low) || low < 0xDC00 || low >= 0xE000) return false;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          }
          utf8(out, cp);
          break;
        }
        default:
          return false;
      }
    }
    return false;
  }
  bool value(FlatValue& v) {
    if (p_ >= t_.size()) return false;
    const char c = t_[p_];
    if (c == '"') {
      v.kind = FlatValue::Kind::kString;
      return string(v.s);
    }
    if (literal("true")) {
      v.kind = FlatValue::Kind::kBool;
      v.b = true;
      return true;
    }
    if (literal("false")) {
      v.kind = FlatValue::Kind::kBool;
      return true;
    }
    if (literal("null")) return true;
    const bool negative = eat('-');
    if (p_ >= t_.size() || t_[p_] < '0' || t_[p_] > '9') return false;
    uint64_t n = 0;
    while (p_ < t_.size() && t_[p_] >= '0' && t_[p_] <= '9') {
      if (n > (UINT64_MAX - 9) / 10) return false;
      n = n * 10 + static_cast<uint64_t>(t_[p_++] - '0');
    }
    if (n > static_cast<uint64_t>(INT64_MAX) + (negative ? 1 : 0)) return false;
    v.kind = FlatValue::Kind::kInt;
    v.i = negative ? static_cast<int64_t>(0 - n) : static_cast<int64_t>(n);
    return true;
  }

  std::string_view t_;
  std::size_t p_ = 0;
};

const FlatValue* find(const FlatObject& obj, std::string_view key) {
  for (const auto& [k, v] : obj) {
    if (k == key) return &v;
  }
  return nullptr;
}

}  // namespace

bool parseFlatObject(std::string_view text, FlatObject& out) {
  out.clear();
  return FlatParser(text).parse(out);
}

void appendJsonString(std::string& out, std::string_view s) {
  static const char kHex[] = "0123456789abcdef";
  out += '"';
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20 || c == 0x7f) {
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 0xF];
        } else {
          out += ch;
        }
    }
  }
  out += '"';
}

std::string encodeExit(const ExitInfo& exit) {
  std::string out = "{\"exit_code\":" + std::to_string(exit.exitCode) +
                    ",\"signal\":" + std::to_string(exit.signal) +
                    ",\"oom_killed\":" + (exit.oomKilled ? "true" : "false") +
                    ",\"finished_ns\":" + std::to_string(exit.finishedNs) + ",\"message\":";
  appendJsonString(out, exit.message);
  out += "}\n";
  return out;
}

bool decodeExit(std::string_view text, ExitInfo& exit) {
  FlatObject obj;
  if (!parseFlatObject(text, obj)) return false;
  const FlatValue* code = find(obj, "exit_code");
  if (code == nullptr || code->kind != FlatValue::Kind::kInt) return false;
  exit = ExitInfo{};
  exit.exitCode = static_cast<int>(code->i);
  if (const FlatValue* v = find(obj, "signal")) exit.signal = static_cast<int>(v->i);
  if (const FlatValue* v = find(obj, "oom_killed")) exit.oomKilled = v->b;
  if (const FlatValue* v = find(obj, "finished_ns")) exit.finishedNs = v->i;
  if (const FlatValue* v = find(obj, "message")) exit.message = v->s;
  return true;
}

std::string encodeLogRecord(const LogRecord& record) {
  std::string out;
  out.reserve(record.line.size() + 64);
  out += "{\"stream\":";
  appendJsonString(out, record.stream);
  out += ",\"ts\":" + std::to_string(record.timestampNs) + ",\"line\":";
  appendJsonString(out, record.line);
  out += "}\n";
  return out;
}

bool decodeLogRecord(std::string_view line, LogRecord& record) {
  FlatObject obj;
  if (!parseFlatObject(line, obj)) return false;
  const FlatValue* stream = find(obj, "stream");
  const FlatValue* ts = find(obj, "ts");
  const FlatValue* text = find(obj, "line");
  if (stream == nullptr || ts == nullptr || text == nullptr ||
      stream->kind != FlatValue::Kind::kString || ts->kind != FlatValue::Kind::kInt ||
      text->kind != FlatValue::Kind::kString) {
    return false;
  }
  record.stream = stream->s;
  record.timestampNs = ts->i;
  record.line = text->s;
  return true;
}

std::string rotatedName(const std::string& path, int n) {
  return n == 0 ? path : path + "." + std::to_string(n);
}

LogWriter::LogWriter(std::string path, uint64_t maxBytes, int maxFiles)
    : path_(std::move(path)), maxBytes_(maxBytes), maxFiles_(maxFiles < 1 ? 1 : maxFiles) {}

LogWriter::~LogWriter() {
  if (fd_ >= 0) close(fd_);
}

bool LogWriter::open() {
  fd_ = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
  if (fd_ < 0) return false;
  struct stat st {};
  size_ = fstat(fd_, &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
  return true;
}

void LogWriter::rotate() {
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
  if (maxFiles_ == 1) {
    truncate(path_.c_str(), 0);
  } else {
    for (int k = maxFiles_ - 1; k >= 1; --k) {
      std::rename(rotatedName(path_, k - 1).c_str(), rotatedName(path_, k).c_str());
    }
  }
  size_ = 0;
}

bool LogWriter::write(const LogRecord& record) {
  const std::string text = encodeLogRecord(record);
  if (fd_ < 0 && !open()) return false;
  if (maxBytes_ > 0 && size_ > 0 && size_ + text.size() > maxBytes_) {
    rotate();
    if (!open()) return false;
  }
  std::size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(fd_, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<std::size_t>(n);
  }
  size_ += text.size();
  return true;
}

}  // namespace shoal::runc
