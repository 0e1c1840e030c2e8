#include "kernel/common/log.h"

#include "kernel/common/json_escape.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <mutex>

namespace shoal::log {
namespace {

class StderrSink : public Sink {
 public:
  void write(Level, std::string_view line) override {
    std::fwrite(line.data(), 1, line.size(), stderr);
    std::fflush(stderr);
  }
};

std::atomic<Level> g_level{Level::kInfo};
std::atomic<Format> g_format{Format::kText};
std::mutex g_mu;
std::shared_ptr<Sink> g_sink;  // guarded by g_mu; null means stderr

bool needsQuotes(std::string_view v) {
  if (v.empty()) return true;
  for (char c : v) {
    if (c == ' ' || c == '"' || c == '=' || c == '\\' || static_cast<unsigned char>(c) < 0x20) {
      return true;
    }
  }
  return false;
}

void appendEscaped(std::string& out, std::string_view v) { appendJsonEscaped(out, v); }

void appendLogfmt(std::string& out, std::string_view key, std::string_view value) {
  out += ' ';
  out += key;
  out += '=';
  if (needsQuotes(value)) {
    out += '"';
    appendEscaped(out, value);
    out += '"';
  } else {
    out += value;
  }
}

void appendJson(std::string& out, std::string_view key, std::string_view value) {
  out += ",\"";
  appendEscaped(out, key);
  out += "\":\"";
  appendEscaped(out, value);
  out += '"';
}

std::string timestamp() {
  auto now = std::chrono::system_clock::now();
  auto secs = std::chrono::system_clock::to_time_t(now);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()) % 1000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(ms.count()));
  return buf;
}

int syslogPriority(Level level) {
  switch (level) {
    case Level::kError:
      return 3;
    case Level::kWarn:
      return 4;
    case Level::kInfo:
      return 6;
    default:
      return 7;
  }
}

}  // namespace

Result<Level> parseLevel(std::string_view name) {
  if (name == "error") return Level::kError;
  if (name == "warn" || name == "warning") return Level::kWarn;
  if (name == "info") return Level::kInfo;
  if (name == "debug") return Level::kDebug;
  if (name == "trace") return Level::kTrace;
  return Status::invalidArgument("unknown log level \"" + std::string(name) +
                                 "\" (want error, warn, info, debug or trace)");
}

std::string_view levelName(Level level) {
  switch (level) {
    case Level::kError:
      return "error";
    case Level::kWarn:
      return "warn";
    case Level::kInfo:
      return "info";
    case Level::kDebug:
      return "debug";
    case Level::kTrace:
      return "trace";
  }
  return "info";
}

void setLevel(Level level) { g_level.store(level); }
Level level() { return g_level.load(); }
void setFormat(Format format) { g_format.store(format); }

void setSink(std::shared_ptr<Sink> sink) {
  std::lock_guard<std::mutex> lock(g_mu);
  g_sink = std::move(sink);
}

bool enabled(Level level) { return static_cast<int>(level) <= static_cast<int>(g_level.load()); }

void write(Level level, std::string_view module, std::string_view message,
           std::initializer_list<Field> fields) {
  if (!enabled(level)) return;
  static const bool journal = std::getenv("JOURNAL_STREAM") != nullptr;
  std::string line;
  line.reserve(128);
  if (g_format.load() == Format::kJson) {
    line += "{\"time\":\"";
    line += timestamp();
    line += '"';
    appendJson(line, "level", levelName(level));
    appendJson(line, "module", module);
    appendJson(line, "msg", message);
    for (const Field& f : fields) appendJson(line, f.key, f.value);
    line += "}\n";
  } else {
    if (journal) {
      line += '<';
      line += static_cast<char>('0' + syslogPriority(level));
      line += '>';
      line += "level=";
      line += levelName(level);
    } else {
      line += "time=";
      line += timestamp();
      line += " level=";
      line += levelName(level);
    }
    appendLogfmt(line, "module", module);
    appendLogfmt(line, "msg", message);
    for (const Field& f : fields) appendLogfmt(line, f.key, f.value);
    line += '\n';
  }
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_sink) {
    g_sink->write(level, line);
  } else {
    static StderrSink stderrSink;
    stderrSink.write(level, line);
  }
}

}  // namespace shoal::log
